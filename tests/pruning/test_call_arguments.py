"""Arguments of sp.prune / sp.score / sp.topk_mask that used to reach users as raw errors from
deep inside: one line naming the argument, before any forward pass."""

import pytest
import torch

import sparsepai as sp
from tests.tiny_nets import batches, convnet, mlp


def test_topk_mask_group_by_name():
    for fn in (sp.topk_mask, sp.kth_largest):
        with pytest.raises((TypeError, ValueError), match=f"sparsepai.{fn.__name__}: group"):
            fn([torch.rand(5)], 2, group="world")


@pytest.mark.parametrize("fn", [lambda m: sp.prune(m, "magnitude", 0.5),
                                lambda m: sp.score(m, "magnitude")])
def test_no_model(fn):
    with pytest.raises(TypeError, match=r"^(prune|score): model must be a torch.nn.Module, got "
                                        "NoneType$"):
        fn(None)


def test_loss_fn_not_callable_before_the_first_forward():
    model = mlp()
    calls = []
    model.register_forward_hook(lambda *a: calls.append(1))
    for fn in (lambda: sp.prune(model, "snip", 0.5, batches(1), loss_fn=3),
               lambda: sp.score(model, "snip", batches(1), loss_fn=3)):
        with pytest.raises(TypeError, match=r"loss_fn must be callable as loss_fn\(logits, "
                                            r"targets\), got int 3"):
            fn()
    assert calls == []


def test_inference_mode_is_explained():
    model = mlp()
    with torch.inference_mode():
        with pytest.raises(RuntimeError, match=r"prune: method 'snip' takes gradients, which "
                                               r"torch.inference_mode\(\) forbids"):
            sp.prune(model, "snip", 0.5, batches(1))
        with pytest.raises(RuntimeError, match="score: method 'grasp' takes gradients"):
            sp.score(model, "grasp", batches(1))
        # methods that take no gradients still work there
        assert sum(int(m.sum()) for m in sp.prune(model, "magnitude", 0.5).values()) == 17


@pytest.mark.parametrize("method,says", [("random", "draws masks for the weights' real tensors"),
                                         ("magnitude", "ranks the weights' values"),
                                         ("snip", "takes gradients of the weights' values")])
def test_meta_device_models_per_method(method, says):
    with torch.device("meta"):
        model = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3))
    with pytest.raises(ValueError) as e:
        sp.prune(model, method, 0.5, batches(1, dtype=torch.float32))
    msg = str(e.value)
    assert msg.startswith("prune: the model is on the meta device") and len(msg.splitlines()) == 1
    assert f"method {method!r} {says}" in msg and "model.to_empty(device=" in msg


def test_meta_device_structured_says_what_to_pass():
    with torch.device("meta"):
        model = convnet()
    with pytest.raises(ValueError, match=r"structured pruning scores real weights.*"
                                         r"model.to_empty\(device='cpu'\).*pass example_inputs="):
        sp.prune(model, "magnitude", 0.5, structured=True, example_inputs=torch.randn(2, 1, 8, 8))
