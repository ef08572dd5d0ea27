"""Methods that never change a weight (random, magnitude, SNIP, GraSP) score the user's model
itself instead of a copy; everything they touch is put back exactly (values, gradients as the
same tensors, requires_grad flags, per-module train/eval modes, buffers). The methods that step
weights still work on a copy and leave the model the same way."""

import pytest
import torch

import sparsepai as sp
import sparsepai.core.model as core_model
from sparsepai.core.loss import default_loss
from sparsepai.core.options import make_config
from sparsepai.core.registry import get_method
from tests.tiny_nets import batches, convnet

IN_PLACE = ["random", "magnitude", "snip", "grasp"]
STEPPING = ["synflow", "force", "prospr"]
OPTS = {"synflow": {"rounds": 2}, "force": {"iterations": 2}}


def _messy_model():
    model = convnet()
    model.train()
    model[1].eval()  # mixed modes: a BN layer in eval mode inside a training model
    model[3].weight.requires_grad_(False)  # a frozen prunable weight
    for i, p in enumerate(model.parameters()):
        p.grad = torch.full_like(p, float(i + 1))
    return model


def _state(model):
    return ({k: v.clone() for k, v in model.state_dict().items()},
            [(p.grad, p.grad.clone(), p.requires_grad) for p in model.parameters()],
            [m.training for m in model.modules()])


def _assert_same(model, before):
    values, grads, modes = before
    after = model.state_dict()
    assert all(torch.equal(values[k], after[k]) for k in values)
    for p, (g, gv, flag) in zip(model.parameters(), grads):
        assert p.grad is g and torch.equal(p.grad, gv) and p.requires_grad == flag
    assert [m.training for m in model.modules()] == modes


@pytest.mark.parametrize("method", IN_PLACE + STEPPING)
def test_model_restored_exactly(method):
    model = _messy_model()
    data = batches(4, shape=(1, 8, 8), classes=10, dtype=torch.float32)
    before = _state(model)
    masks = sp.prune(model, method, 0.7, data, **OPTS.get(method, {}))
    _assert_same(model, before)
    scores = sp.score(model, method, data, **OPTS.get(method, {}))
    _assert_same(model, before)
    # a frozen weight is scored like the others; scores never alias the weights
    params = dict(model.named_parameters())
    assert set(masks) == set(scores) == {"0.weight", "3.weight", "7.weight"}
    assert all(s.data_ptr() != params[n].data_ptr() for n, s in scores.items())


@pytest.mark.parametrize("method", IN_PLACE)
def test_in_place_methods_make_no_copy(method, monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("a method that changes no weight copied the model")

    monkeypatch.setattr(core_model, "private_copy", refuse)
    model = _messy_model()
    data = batches(2, shape=(1, 8, 8), classes=10, dtype=torch.float32)
    before = _state(model)
    sp.prune(model, method, 0.5, data)
    _assert_same(model, before)


def test_in_place_scores_equal_the_copy_scores():
    # the same saliencies as on a private copy of a clean model (gradients off, eval mode)
    data = batches(2, shape=(1, 8, 8), classes=10, dtype=torch.float32)
    for method in IN_PLACE:
        a = sp.score(_messy_model(), method, data)
        m = get_method(method)
        clean = core_model.private_copy(_messy_model(), list(a))
        with torch.enable_grad():
            want = m.scores(m.saliency(clean, list(a), data, default_loss(None),
                                       make_config(m, {})))
        assert all(torch.equal(a[n], want[n]) for n in a), method
