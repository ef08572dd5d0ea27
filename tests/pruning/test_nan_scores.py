"""NaN scores are an error naming the method and the layers, never masks decided by position
(``sp.topk_mask`` ranks NaN lowest)."""

import pytest
import torch

import sparsepai as sp
from tests.tiny_nets import batches, convnet, mlp


def test_unstructured_nan_scores_raise():
    model = mlp()
    with torch.no_grad():
        model[2].weight[1, 2] = float("nan")
    with pytest.raises(ValueError) as e:
        sp.prune(model, "magnitude", 0.5)
    msg = str(e.value)
    assert msg.startswith("prune: method 'magnitude' gave NaN scores in 1 of 2 layers (2.weight)")
    assert len(msg.splitlines()) == 1
    for scope in ({"scope": "layer"}, {"min_per_layer": 1}):
        with pytest.raises(ValueError, match="gave NaN scores"):
            sp.prune(model, "magnitude", 0.5, **scope)


def test_iterative_rounds_check_every_round():
    # the first round's scores are finite, the second round's are not
    from sparsepai.core import registry as base

    calls = {"n": 0}
    real = base.Method.scores

    def scores(self, saliency):
        calls["n"] += 1
        out = real(self, saliency)
        if calls["n"] == 2:
            out = {n: torch.full_like(s, float("nan")) for n, s in out.items()}
        return out

    with pytest.MonkeyPatch.context() as m:
        m.setattr(base.Method, "scores", scores)
        with pytest.raises(ValueError, match="method 'synflow' gave NaN scores in 2 of 2"):
            sp.prune(mlp(), "synflow", 0.9, batches(1), rounds=3)
    assert calls["n"] == 2


def test_structured_nan_scores_raise():
    model = convnet()
    with torch.no_grad():
        model[0].weight[1].fill_(float("nan"))
    x = torch.randn(2, 1, 8, 8)
    with pytest.raises(ValueError, match=r"method 'magnitude' gave NaN scores in 1 of \d+ "
                                         r"channel groups \(0\)"):
        sp.prune(model, "magnitude", 0.5, structured=True, example_inputs=x)
