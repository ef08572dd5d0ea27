"""Pruning at initialization on tiny models: ProsPr against an independent unrolled computation,
the SNIP and first-order special cases, exact kept counts, the magnitude baseline against
torch.nn.utils.prune, the user's model untouched, determinism and bad input."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F

import sparsepai as sp
from tests.tiny_nets import batches, convnet, mlp

METHODS = ["random", "magnitude", "snip", "grasp", "synflow", "force", "prospr"]


def unrolled_prospr(model, data, M, lr, momentum):
    """dL(w_M, D_M)/dc written out by hand for the 2-layer MLP (no torch.func)."""
    W1, b1 = model[0].weight.detach(), model[0].bias.detach()
    W2, b2 = model[2].weight.detach(), model[2].bias.detach()
    c1 = torch.ones_like(W1, requires_grad=True)
    c2 = torch.ones_like(W2, requires_grad=True)
    w = [c1 * W1, b1.clone().requires_grad_(), c2 * W2, b2.clone().requires_grad_()]

    def loss(w, x, y):
        return F.cross_entropy(torch.tanh(x @ w[0].T + w[1]) @ w[2].T + w[3], y)

    vel = None
    for m in range(M):
        g = torch.autograd.grad(loss(w, *data[m]), w, create_graph=True)
        vel = list(g) if vel is None or not momentum else [momentum * v + gi for v, gi in zip(vel, g)]
        w = [wi - lr * (vi if momentum else gi) for wi, vi, gi in zip(w, vel, g)]
    g1, g2 = torch.autograd.grad(loss(w, *data[M]), [c1, c2])
    return {"0.weight": g1.abs(), "2.weight": g2.abs()}


@pytest.mark.parametrize("M,momentum", [(1, 0.0), (3, 0.0), (2, 0.9)])
def test_prospr_full_meta_gradient_matches_unrolled(M, momentum):
    model = mlp()
    data = batches(M + 1)
    got = sp.score(model, "prospr", data, meta_steps=M, inner_lr=0.5, inner_momentum=momentum,
                   same_batch=False, first_order=False)
    want = unrolled_prospr(model, data, M, 0.5, momentum)
    assert list(got) == ["0.weight", "2.weight"]
    for n in want:
        torch.testing.assert_close(got[n], want[n], rtol=1e-10, atol=1e-12)
    # and the meta-gradient is not just the first-order one
    fo = sp.score(model, "prospr", data, meta_steps=M, inner_lr=0.5, inner_momentum=momentum,
                  first_order=True, same_batch=False)
    assert not torch.allclose(fo["0.weight"], got["0.weight"])


def test_prospr_meta_gradient_by_finite_differences():
    model = mlp()
    data = batches(3)
    got = sp.score(model, "prospr", data, meta_steps=2, inner_lr=0.3,
                   same_batch=False, first_order=False)["2.weight"]

    def meta_loss(scale_entry, h):
        m = copy.deepcopy(model)
        with torch.no_grad():
            m[2].weight[scale_entry] *= 1 + h  # c = 1 + h on one entry
        opt = torch.optim.SGD(m.parameters(), lr=0.3)
        for x, y in data[:2]:
            opt.zero_grad()
            F.cross_entropy(m(x), y).backward()
            opt.step()
        return F.cross_entropy(m(data[2][0]), data[2][1]).item()

    for entry in [(0, 0), (2, 4), (1, 3)]:
        h = 1e-6
        fd = (meta_loss(entry, h) - meta_loss(entry, -h)) / (2 * h)
        assert math.isclose(abs(fd), got[entry].item(), rel_tol=1e-5, abs_tol=1e-9)


@pytest.mark.parametrize("first_order", [False, True])
def test_prospr_zero_meta_steps_is_snip(first_order):
    model = convnet()
    data = batches(1, shape=(1, 8, 8), classes=10, dtype=torch.float32)
    p = sp.score(model, "prospr", data, meta_steps=0, first_order=first_order)
    s = sp.score(model, "snip", data)
    for n in s:
        torch.testing.assert_close(p[n], s[n], rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_prospr_first_order_formula(momentum):
    model = mlp()
    data = batches(3)
    got = sp.score(model, "prospr", data, meta_steps=2, inner_lr=0.2, inner_momentum=momentum,
                   first_order=True, same_batch=False)
    # written out: w <- w - lr * v, v <- momentum * v + g (v = g on the first step)
    w = [p.detach().clone().requires_grad_() for p in model.parameters()]
    init = [t.detach().clone() for t in w]

    def loss(w, x, y):
        return F.cross_entropy(torch.tanh(x @ w[0].T + w[1]) @ w[2].T + w[3], y)

    v = None
    for x, y in data[:2]:
        g = torch.autograd.grad(loss(w, x, y), w)
        v = list(g) if v is None else [momentum * vi + gi for vi, gi in zip(v, g)]
        w = [(wi - 0.2 * vi).detach().requires_grad_() for wi, vi in zip(w, v)]
    g = torch.autograd.grad(loss(w, *data[2]), w)
    torch.testing.assert_close(got["0.weight"], (g[0] * init[0]).abs())
    torch.testing.assert_close(got["2.weight"], (g[2] * init[2]).abs())


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.9, 0.99])
def test_exact_kept_counts(method, sparsity):
    model = convnet()
    data = batches(4, shape=(1, 8, 8), classes=10, dtype=torch.float32)
    opts = {"rounds": 5} if method == "synflow" else {"iterations": 3} if method == "force" else {}
    masks = sp.prune(model, method, sparsity, data, **opts)
    params = dict(model.named_parameters())
    n = sum(params[k].numel() for k in masks)
    assert set(masks) == {"0.weight", "3.weight", "7.weight"}
    assert sum(int(m.sum()) for m in masks.values()) == n - round(sparsity * n)
    for k, m in masks.items():
        assert m.dtype == torch.bool and m.shape == params[k].shape


def test_magnitude_equals_torch_global_unstructured():
    import torch.nn.utils.prune as tprune

    model = convnet()
    masks = sp.prune(model, "magnitude", 0.7)
    ref = copy.deepcopy(model)
    mods = [(ref[0], "weight"), (ref[3], "weight"), (ref[7], "weight")]
    n = sum(m.weight.numel() for m, _ in mods)
    tprune.global_unstructured(mods, pruning_method=tprune.L1Unstructured, amount=round(0.7 * n))
    for name, (mod, _) in zip(["0.weight", "3.weight", "7.weight"], mods):
        assert torch.equal(masks[name], mod.weight_mask.bool())


@pytest.mark.parametrize("method", METHODS)
def test_model_left_exactly_as_it_was(method):
    model = convnet()
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    data = batches(4, shape=(1, 8, 8), classes=10, dtype=torch.float32)
    opts = {"rounds": 3} if method == "synflow" else {"iterations": 2} if method == "force" else {}
    sp.prune(model, method, 0.8, data, **opts)
    sp.score(model, method, data, **({} if method != "synflow" else {"rounds": 1}))
    if method == "prospr":
        sp.score(model, method, data, first_order=True, inner_momentum=0.9)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not model.training
    assert all(p.grad is None for p in model.parameters())
    assert next(model.parameters()).dtype == torch.float32


@pytest.mark.parametrize("method", METHODS)
def test_scores_are_deterministic(method):
    # the same model and data give bit-identical scores; "random" follows its seed option
    data = batches(4, shape=(1, 8, 8), classes=10, dtype=torch.float32)
    opts = {"rounds": 3} if method == "synflow" else {"iterations": 2} if method == "force" else {}
    a = sp.score(convnet(seed=5), method, data, **opts)
    b = sp.score(convnet(seed=5), method, data, **opts)
    assert all(torch.equal(a[k], b[k]) for k in a)
    if method != "random":  # another initialization scores differently
        c = sp.score(convnet(seed=6), method, data, **opts)
        assert not all(torch.equal(a[k], c[k]) for k in a)


def test_random_is_deterministic_with_a_seed():
    model = convnet()
    a = sp.prune(model, "random", 0.9, seed=3)
    b = sp.prune(model, "random", 0.9, seed=3)
    c = sp.prune(model, "random", 0.9, seed=4)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_scope_and_layer_collapse_guard():
    model = convnet()
    with torch.no_grad():
        model[0].weight.mul_(1e-6)  # magnitude would prune this layer away entirely
    with pytest.warns(RuntimeWarning, match="'0.weight' is fully pruned"):
        sp.prune(model, "magnitude", 0.9)
    masks = sp.prune(model, "magnitude", 0.9, min_per_layer=5)
    assert int(masks["0.weight"].sum()) == 5
    params = dict(model.named_parameters())
    n = sum(params[k].numel() for k in masks)
    assert sum(int(m.sum()) for m in masks.values()) == n - round(0.9 * n)
    layer = sp.prune(model, "magnitude", 0.5, scope="layer")
    for k, m in layer.items():
        assert abs(int(m.sum()) - m.numel() / 2) <= 1
    assert sum(int(m.sum()) for m in layer.values()) == n - round(0.5 * n)


def test_bad_input():
    model = convnet()
    data = batches(2, shape=(1, 8, 8), classes=10, dtype=torch.float32)
    with pytest.raises(ValueError, match=r"sparsity must be in \[0, 1\)"):
        sp.prune(model, "magnitude", 1.0)
    with pytest.raises(ValueError, match=r"sparsity must be in \[0, 1\)"):
        sp.prune(model, "magnitude", -0.1)
    with pytest.raises(ValueError, match="valid methods: ") as e:
        sp.prune(model, "obd", 0.5)
    for name in METHODS + ["lottery", "magnitude_after_training"]:
        assert name in str(e.value)
    with pytest.raises(ValueError, match="no prunable weights"):
        sp.score(torch.nn.Sequential(torch.nn.ReLU()), "magnitude")
    with pytest.raises(ValueError, match="needs 4 batches of data, got 2"):
        sp.score(model, "prospr", data, same_batch=False)
    with pytest.raises(TypeError, match="has no options"):
        sp.score(model, "snip", data, meta_steps=3)
    bad = [(torch.full((8, 1, 8, 8), float("inf")), torch.zeros(8, dtype=torch.long))] * 4
    with pytest.raises(FloatingPointError, match="prospr inner step 0"):
        sp.score(model, "prospr", bad)
    with pytest.raises(ValueError, match="structured pruning supports the methods"):
        sp.prune(model, "synflow", 0.5, structured=True)


@pytest.mark.parametrize("first_order", [False, True])
def test_nan_loss_during_the_inner_steps_names_the_step(first_order):
    model = convnet()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    data = batches(4, shape=(1, 8, 8), classes=10, dtype=torch.float32)
    nan_at = lambda i: [(x.clone().fill_(float("nan")), y) if j == i else (x, y)  # noqa: E731
                        for j, (x, y) in enumerate(data)]
    for i in (1, 2):
        with pytest.raises(FloatingPointError, match=f"prospr inner step {i}: the loss is nan"):
            sp.score(model, "prospr", nan_at(i), first_order=first_order, same_batch=False)
    with pytest.raises(FloatingPointError, match="prospr meta-loss: the loss is nan"):
        sp.score(model, "prospr", nan_at(3), first_order=first_order, same_batch=False)
    # a learning rate that blows the weights up inside the steps: also caught, by step
    with pytest.raises(FloatingPointError, match=r"prospr (inner step [12]|meta-loss)"):
        sp.score(model, "prospr", data, inner_lr=1e30, first_order=first_order)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())

