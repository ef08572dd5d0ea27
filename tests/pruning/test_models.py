"""Every method on models of any interface: inputs as a tensor, a tuple (positional) or a dict
(keyword arguments); outputs as a tensor, a tuple or list (logits first), a mapping or an object
with ``.logits``; frozen weights; linear layers under another name (a ``Conv1D`` like
transformers' GPT-2 layers). Scores must equal those of the plain tensor-in/tensor-out model."""

import pytest
import torch

import sparsepai as sp
import sparsepai.core.prunable
from tests.tiny_nets import batches, mlp

METHODS = [("random", {}), ("magnitude", {}), ("snip", {}), ("grasp", {}),
           ("synflow", {"rounds": 2}), ("force", {"iterations": 2}), ("prospr", {"meta_steps": 1}),
           ("prospr", {"meta_steps": 1, "first_order": True})]
IDS = [m + ("-fo" if o.get("first_order") else "") for m, o in METHODS]


class Output:
    """An output object like transformers' ModelOutput: the logits as an attribute."""

    def __init__(self, logits, hidden):
        self.logits, self.hidden = logits, hidden


class Wrapped(torch.nn.Module):
    """``mlp()``'s layers behind another calling convention."""

    def __init__(self, inputs: str, outputs: str):
        super().__init__()
        self.net, self.inputs, self.outputs = mlp(), inputs, outputs

    def forward(self, *args, **kwargs):
        if self.inputs == "dict":
            x = kwargs["features"] * kwargs["scale"]
        elif self.inputs == "tuple":
            x = args[0] * args[1]
        else:
            (x,) = args
        h = self.net[1](self.net[0](x))
        logits = self.net[2](h)
        return {"tensor": lambda: logits, "tuple": lambda: (logits, h), "list": lambda: [logits],
                "object": lambda: Output(logits, h),
                "mapping": lambda: {"logits": logits, "hidden": h}}[self.outputs]()


def wrap_data(data, inputs):
    if inputs == "dict":
        return [({"features": x, "scale": torch.ones(())}, y) for x, y in data]
    if inputs == "tuple":
        return [((x, torch.ones(())), y) for x, y in data]
    return data


@pytest.mark.parametrize("method,opts", METHODS, ids=IDS)
@pytest.mark.parametrize("inputs,outputs", [("tensor", "tuple"), ("dict", "object"),
                                            ("tuple", "mapping"), ("tuple", "list")])
def test_any_calling_convention_scores_like_the_plain_model(method, opts, inputs, outputs):
    data = batches(2)
    want = sp.score(mlp(), method, data, **opts)
    model = Wrapped(inputs, outputs)
    got = sp.score(model, method, wrap_data(data, inputs), **opts)
    assert list(got) == ["net.0.weight", "net.2.weight"]
    for n in want:
        torch.testing.assert_close(got[f"net.{n}"], want[n], rtol=1e-12, atol=1e-15)
    masks = sp.prune(model, method, 0.6, wrap_data(data, inputs), **opts)
    assert sum(int(m.sum()) for m in masks.values()) == 35 - round(0.6 * 35)


@pytest.mark.parametrize("method,opts", METHODS, ids=IDS)
def test_frozen_weights_are_scored_like_the_others(method, opts):
    data = batches(2)
    want = sp.score(mlp(), method, data, **opts)
    model = mlp()
    model[0].weight.requires_grad_(False)
    model[2].bias.requires_grad_(False)
    got = sp.score(model, method, data, **opts)
    for n in want:
        torch.testing.assert_close(got[n], want[n], rtol=1e-12, atol=1e-15)
    sp.prune(model, method, 0.5, data, **opts)
    assert [p.requires_grad for p in model.parameters()] == [False, True, True, False]
    assert all(p.grad is None for p in model.parameters())


class Conv1D(torch.nn.Module):
    """A linear layer under another name, as transformers' ``pytorch_utils.Conv1D``:
    ``y = x @ W + b`` with W of shape (in, out)."""

    def __init__(self, nf, nx):
        super().__init__()
        self.nf = nf
        self.weight = torch.nn.Parameter(torch.randn(nx, nf, dtype=torch.float64) * 0.5)
        self.bias = torch.nn.Parameter(torch.zeros(nf, dtype=torch.float64))

    def forward(self, x):
        return torch.addmm(self.bias, x.view(-1, x.shape[-1]), self.weight)


def test_linear_layers_under_another_name_are_prunable_by_default():
    torch.manual_seed(0)
    model = torch.nn.Sequential(Conv1D(5, 4), torch.nn.Tanh(), torch.nn.Linear(5, 3).double())
    data = batches(2)
    names = sp.pruning.prunable_names(model)
    assert names == ["0.weight", "2.weight"]
    got = sp.score(model, "snip", data)
    # the same layer as an nn.Linear (weight transposed) scores the same, transposed
    ref = mlp()
    with torch.no_grad():
        ref[0].weight.copy_(model[0].weight.T)
        ref[0].bias.copy_(model[0].bias)
        ref[2].load_state_dict(model[2].state_dict())
    want = sp.score(ref, "snip", data)
    torch.testing.assert_close(got["0.weight"], want["0.weight"].T, rtol=1e-12, atol=1e-15)
    # only a 2-D weight whose nf matches is taken for a linear layer
    odd = Conv1D(5, 4)
    odd.nf = 4
    assert not sparsepai.core.prunable.is_linear_alias(odd)


def test_outputs_without_logits_are_a_clear_error():
    class NoLogits(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(4, 3).double()

        def forward(self, x):
            return {"scores": "not a tensor", "lin": self.lin(x)}

    with pytest.raises(TypeError, match="cannot find the logits in the model's output"):
        sp.score(NoLogits(), "snip", batches(1))


def test_loss_must_be_a_scalar():
    with pytest.raises(ValueError, match="snip: loss_fn must return a scalar tensor"):
        sp.score(mlp(), "snip", batches(1), loss_fn=lambda z, y: z)
