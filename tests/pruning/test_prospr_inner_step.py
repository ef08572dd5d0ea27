"""ProsPr's scale-aware inner step (``inner_step="relative"``) against the meta-gradient written
out by hand with per-tensor rates, the first-order formula, and the property it exists for: the
scores of a batch-normalised network do not depend on the scale of a normalised layer's weights."""

import pytest
import torch
import torch.nn.functional as F

import sparsepai as sp
from sparsepai.pruning.prospr import ProsprConfig, step_sizes
from tests.tiny_nets import batches, convnet, mlp


def _loss(w, x, y):
    return F.cross_entropy(torch.tanh(x @ w[0].T + w[1]) @ w[2].T + w[3], y)


def _rates(model, batch, lr):
    """lr * |p| / |g| per tensor, g the loss gradient at initialisation on ``batch``."""
    w = [p.detach().clone().requires_grad_() for p in model.parameters()]
    g = torch.autograd.grad(_loss(w, *batch), w)
    return [lr * float(p.detach().norm()) / float(gi.norm()) for p, gi in zip(w, g)]


def test_relative_full_meta_gradient_matches_unrolled():
    model, data, M = mlp(), batches(3), 2
    rates = _rates(model, data[0], 0.05)
    W1, b1, W2, b2 = (p.detach() for p in model.parameters())
    c1 = torch.ones_like(W1, requires_grad=True)
    c2 = torch.ones_like(W2, requires_grad=True)
    w = [c1 * W1, b1.clone().requires_grad_(), c2 * W2, b2.clone().requires_grad_()]
    for m in range(M):
        g = torch.autograd.grad(_loss(w, *data[m]), w, create_graph=True)
        w = [wi - r * gi for wi, r, gi in zip(w, rates, g)]
    g1, g2 = torch.autograd.grad(_loss(w, *data[M]), [c1, c2])
    got = sp.score(model, "prospr", data, meta_steps=M, inner_lr=0.05, inner_step="relative",
                   same_batch=False, first_order=False)
    torch.testing.assert_close(got["0.weight"], g1.abs(), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(got["2.weight"], g2.abs(), rtol=1e-10, atol=1e-12)
    sgd = sp.score(model, "prospr", data, meta_steps=M, inner_lr=0.05, same_batch=False,
                   first_order=False)
    assert not torch.allclose(sgd["0.weight"], got["0.weight"])


def test_relative_first_order_matches_formula():
    model, data = mlp(), batches(3)
    rates = _rates(model, data[0], 0.05)
    w = [p.detach().clone().requires_grad_() for p in model.parameters()]
    init = [t.detach().clone() for t in w]
    for x, y in data[:2]:
        g = torch.autograd.grad(_loss(w, x, y), w)
        w = [(wi - r * gi).detach().requires_grad_() for wi, r, gi in zip(w, rates, g)]
    g = torch.autograd.grad(_loss(w, *data[2]), w)
    got = sp.score(model, "prospr", data, meta_steps=2, inner_lr=0.05, inner_step="relative",
                   first_order=True, same_batch=False)
    torch.testing.assert_close(got["0.weight"], (g[0] * init[0]).abs())
    torch.testing.assert_close(got["2.weight"], (g[2] * init[2]).abs())


def test_first_step_moves_every_tensor_by_inner_lr_of_its_norm():
    p = [torch.tensor([3.0, 4.0]), torch.zeros(2)]
    g = [torch.tensor([0.0, 0.5]), torch.tensor([1.0, 1.0])]
    cfg = ProsprConfig(inner_lr=0.1, inner_step="relative")
    lrs = step_sizes(p, g, cfg)
    assert lrs == [pytest.approx(0.1 * 5.0 / 0.5), 0.1]  # a zero tensor: inner_lr itself
    assert float((lrs[0] * g[0]).norm()) == pytest.approx(0.1 * float(p[0].norm()))
    assert step_sizes(p, g, ProsprConfig(inner_lr=0.1)) == [0.1, 0.1]


@pytest.mark.parametrize("first_order", [False, True])
def test_relative_scores_ignore_the_scale_of_a_normalised_layer(first_order):
    """conv -> batch norm (batch statistics) is invariant to the conv weights' scale; with the
    relative step the whole inner trajectory is, so the scores |w * dL/dw| are too (up to batch
    norm's eps); plain SGD's are not."""
    torch.manual_seed(0)
    model = convnet().double()
    scaled = convnet().double()
    with torch.no_grad():
        scaled[0].weight.mul_(10.0)
    data = batches(4, shape=(1, 8, 8), classes=10, dtype=torch.float64)
    opts = dict(meta_steps=3, inner_lr=0.05, same_batch=False, first_order=first_order)
    a = sp.score(model, "prospr", data, inner_step="relative", **opts)
    b = sp.score(scaled, "prospr", data, inner_step="relative", **opts)
    for n in a:
        torch.testing.assert_close(a[n], b[n], rtol=2e-3, atol=1e-7)
    a = sp.score(model, "prospr", data, **{**opts, "inner_lr": 0.5})
    b = sp.score(scaled, "prospr", data, **{**opts, "inner_lr": 0.5})
    assert not torch.allclose(a["3.weight"], b["3.weight"], rtol=2e-2)


def test_inner_step_is_checked():
    with pytest.raises(ValueError, match="'inner_step' must be one of"):
        sp.score(mlp(), "prospr", batches(4), inner_step="adam")
