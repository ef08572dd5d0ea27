"""ProsPr's ``same_batch`` option (the official code's batch protocol) against independent
computations: the official protocol written out by hand, finite differences of the meta-loss,
the first-order formula, SNIP at M = 0, and the batches it reads; ``batches`` (each D_m made of
several consecutive batches) against the same scores on batches concatenated by hand."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F

import sparsepai as sp
from tests.tiny_nets import batches, mlp


def official_protocol(model, batch, M, lr):
    """The official ProsPr loop (mil-ad/prospr, ``new_data_in_inner=False``) for the 2-layer MLP,
    written out by hand: the one batch serves every inner SGD step and the meta-loss; masks on the
    weights only; the score is |d meta-loss / d mask|."""
    x, y = batch
    W1, b1 = model[0].weight.detach(), model[0].bias.detach()
    W2, b2 = model[2].weight.detach(), model[2].bias.detach()
    c1 = torch.ones_like(W1, requires_grad=True)
    c2 = torch.ones_like(W2, requires_grad=True)
    fast = [c1 * W1, b1.clone().requires_grad_(), c2 * W2, b2.clone().requires_grad_()]

    def loss(p):
        return F.cross_entropy(torch.tanh(x @ p[0].T + p[1]) @ p[2].T + p[3], y)

    for _ in range(M):
        g = torch.autograd.grad(loss(fast), fast, create_graph=True)
        fast = [p - lr * gi for p, gi in zip(fast, g)]
    g1, g2 = torch.autograd.grad(loss(fast), [c1, c2])
    return {"0.weight": g1.abs(), "2.weight": g2.abs()}


@pytest.mark.parametrize("M", [1, 3])
def test_same_batch_is_the_official_protocol(M):
    model = mlp()
    data = batches(M + 1)
    got = sp.score(model, "prospr", data, meta_steps=M, inner_lr=0.5, same_batch=True,
                   first_order=False)
    want = official_protocol(model, data[0], M, 0.5)
    for n in want:
        torch.testing.assert_close(got[n], want[n], rtol=1e-10, atol=1e-12)
    # the default batch protocol is the paper's (M + 1 distinct batches), which differs
    default = sp.score(model, "prospr", data, meta_steps=M, inner_lr=0.5, first_order=False)
    distinct = sp.score(model, "prospr", data, meta_steps=M, inner_lr=0.5, same_batch=False,
                        first_order=False)
    for n in want:
        assert torch.equal(default[n], distinct[n])
    assert not torch.allclose(distinct["0.weight"], got["0.weight"])


def test_same_batch_needs_and_reads_only_the_first_batch():
    model = mlp()
    data = batches(4)
    one = sp.score(model, "prospr", data[:1], meta_steps=3, same_batch=True)
    many = sp.score(model, "prospr", data, meta_steps=3, same_batch=True)
    for n in one:
        assert torch.equal(one[n], many[n])
    with pytest.raises(ValueError, match="needs 4 batches"):
        sp.score(model, "prospr", data[:1], meta_steps=3, same_batch=False)


def test_same_batch_by_finite_differences():
    model = mlp()
    (x, y), = batches(1)
    got = sp.score(model, "prospr", [(x, y)], meta_steps=2, inner_lr=0.3, first_order=False,
                   same_batch=True)["2.weight"]

    def meta_loss(entry, h):
        m = copy.deepcopy(model)
        with torch.no_grad():
            m[2].weight[entry] *= 1 + h  # c = 1 + h on one entry
        opt = torch.optim.SGD(m.parameters(), lr=0.3)
        for _ in range(2):
            opt.zero_grad()
            F.cross_entropy(m(x), y).backward()
            opt.step()
        return F.cross_entropy(m(x), y).item()

    for entry in [(0, 0), (2, 4), (1, 3)]:
        h = 1e-6
        fd = (meta_loss(entry, h) - meta_loss(entry, -h)) / (2 * h)
        assert math.isclose(abs(fd), got[entry].item(), rel_tol=1e-5, abs_tol=1e-9)


def test_same_batch_first_order_formula():
    model = mlp()
    data = batches(3)
    got = sp.score(model, "prospr", data, meta_steps=2, inner_lr=0.2, first_order=True,
                   same_batch=True)
    x, y = data[0]
    w = [p.detach().clone().requires_grad_() for p in model.parameters()]
    init = [t.detach().clone() for t in w]

    def loss(w):
        return F.cross_entropy(torch.tanh(x @ w[0].T + w[1]) @ w[2].T + w[3], y)

    for _ in range(2):
        g = torch.autograd.grad(loss(w), w)
        w = [(wi - 0.2 * gi).detach().requires_grad_() for wi, gi in zip(w, g)]
    g = torch.autograd.grad(loss(w), w)
    torch.testing.assert_close(got["0.weight"], (g[0] * init[0]).abs())
    torch.testing.assert_close(got["2.weight"], (g[2] * init[2]).abs())


def test_same_batch_zero_meta_steps_is_snip():
    model = mlp()
    data = batches(1)
    p = sp.score(model, "prospr", data, meta_steps=0, same_batch=True)
    s = sp.score(model, "snip", data)
    for n in s:
        torch.testing.assert_close(p[n], s[n], rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("same_batch", [False, True])
def test_batches_concatenates_consecutive_batches(same_batch):
    model = mlp()
    M, k = 2, 3
    data = batches((1 if same_batch else M + 1) * k, seed=3)
    joined = [(torch.cat([x for x, _ in data[i:i + k]]), torch.cat([y for _, y in data[i:i + k]]))
              for i in range(0, len(data), k)]
    got = sp.score(model, "prospr", data, meta_steps=M, inner_lr=0.5, batches=k,
                   same_batch=same_batch, first_order=False)
    want = (official_protocol(model, joined[0], M, 0.5) if same_batch else
            sp.score(model, "prospr", joined, meta_steps=M, inner_lr=0.5, same_batch=False,
                     first_order=False))
    for n in want:
        torch.testing.assert_close(got[n], want[n], rtol=1e-10, atol=1e-12)


def test_concat_batches_of_tuples_and_dicts():
    from sparsepai.pruning.prospr import concat_batches

    a, b = torch.arange(6.).reshape(2, 3), torch.arange(6., 12.).reshape(2, 3)
    y1, y2 = torch.tensor([0, 1]), torch.tensor([2, 0])
    x, y = concat_batches([((a, -a), y1), ((b, -b), y2)])
    assert torch.equal(x[0], torch.cat([a, b])) and torch.equal(x[1], torch.cat([-a, -b]))
    assert torch.equal(y, torch.tensor([0, 1, 2, 0]))
    x, _ = concat_batches([({"ids": a}, y1), ({"ids": b}, y2)])
    assert torch.equal(x["ids"], torch.cat([a, b]))


def test_bad_batches():
    with pytest.raises(ValueError, match=r"prospr.*batches"):  # names the method and option
        sp.score(mlp(), "prospr", batches(4), batches=0)
    with pytest.raises(ValueError, match="needs 8 batches"):
        sp.score(mlp(), "prospr", batches(4), meta_steps=3, batches=2, same_batch=False)
    with pytest.raises(ValueError, match="needs 2 batches"):
        sp.score(mlp(), "prospr", batches(1), meta_steps=3, batches=2, same_batch=True)
