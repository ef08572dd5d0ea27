"""The context second-order methods score in (``sparsepai.pruning.second_order``): a
``hardsigmoid`` that can be differentiated twice (``aten::hardsigmoid_backward`` cannot), checked
against a hand-written oracle, and GraSP / ProsPr on a squeeze-and-excitation model gated by
``nn.Hardsigmoid`` (MobileNetV3's gate) against the same model gated by the oracle, float64."""

import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import sparsepai as sp
from sparsepai.pruning.second_order import hardsigmoid_twice, second_order


def oracle(x):
    """hardsigmoid from relu6: twice differentiable in autograd, equal away from +-3."""
    return F.relu6(x + 3) / 6


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_value_and_gradient_match_the_kernel(dtype):
    x = torch.cat([torch.randn(1000, dtype=dtype) * 4,
                   torch.tensor([-3.0, 3.0, -1e30, 1e30, 0.0, -2.999, 2.999], dtype=dtype)])
    x.requires_grad_(True)
    want = F.hardsigmoid(x)
    got = hardsigmoid_twice(x)
    tol = {"rtol": 1e-6, "atol": 1e-7} if dtype == torch.float32 else {}
    torch.testing.assert_close(got, want, **tol)
    g_want, = torch.autograd.grad(want.sum(), x)
    g_got, = torch.autograd.grad(got.sum(), x)
    torch.testing.assert_close(g_got, g_want)  # zero at exactly +-3 as the kernel's


def test_nan_stays_nan():
    x = torch.tensor([float("nan"), 1.0])
    assert torch.isnan(hardsigmoid_twice(x)[0]) and torch.isnan(F.hardsigmoid(x)[0])


@pytest.mark.parametrize("how", ["module", "functional", "inplace"])
def test_double_backward_inside_the_context_only(how):
    gate = {"module": nn.Hardsigmoid(), "functional": F.hardsigmoid,
            "inplace": lambda t: F.hardsigmoid(t.clone(), inplace=True)}[how]
    x = torch.randn(64, dtype=torch.float64, requires_grad=True)

    def second(f):
        g, = torch.autograd.grad(f(x).pow(2).sum(), x, create_graph=True)
        return torch.autograd.grad(g.pow(3).sum(), x)[0]

    with second_order():
        got = second(gate)
    torch.testing.assert_close(got, second(oracle))
    with pytest.raises(RuntimeError, match="hardsigmoid_backward"):
        second(gate)  # outside, PyTorch's own kernel again


class SE(nn.Module):
    def __init__(self, gate):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc1 = nn.Conv2d(8, 4, 1)
        self.fc2 = nn.Conv2d(4, 8, 1)
        self.gate = gate
        self.head = nn.Linear(8, 5)

    def forward(self, x):
        h = F.relu(self.conv(x))
        s = self.gate(self.fc2(F.relu(self.fc1(h.mean((2, 3), keepdim=True)))) * 3)
        return self.head((h * s).mean((2, 3)))


class Oracle(nn.Module):
    def forward(self, x):
        return oracle(x)


@pytest.mark.parametrize("method,options", [
    ("grasp", {}), ("prospr", {"meta_steps": 2, "first_order": False}),
    ("prospr", {"meta_steps": 2, "inner_momentum": 0.9, "first_order": False})])
def test_second_order_scores_through_hardsigmoid(method, options):
    torch.manual_seed(0)
    model = SE(nn.Hardsigmoid()).double()
    ref = copy.deepcopy(model)
    ref.gate = Oracle()
    g = torch.Generator().manual_seed(1)
    data = [(torch.randn(4, 3, 8, 8, generator=g, dtype=torch.float64),
             torch.randint(0, 5, (4,), generator=g)) for _ in range(3)]
    before = copy.deepcopy(model.state_dict())
    got = sp.score(model, method, data, **options)
    want = sp.score(ref, method, data, **options)
    assert got.keys() == want.keys()
    for k in got:
        torch.testing.assert_close(got[k], want[k], rtol=1e-9, atol=1e-12)
    for k, v in model.state_dict().items():  # the user's model untouched
        assert torch.equal(v, before[k])
    assert isinstance(model.gate, nn.Hardsigmoid)
