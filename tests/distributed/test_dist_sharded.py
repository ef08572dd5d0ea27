"""FSDP2 (fully_shard on a CPU mesh, 2 gloo processes): masks equal the unsharded run on all
ranks' data with exact kept counts, come back as DTensors placed like their parameters, the
model is left as it was, and MaskedSGD/MaskedAdamW steps on the shards equal unsharded masked
training and keep pruned entries at exactly zero."""

import pytest
import torch
import torch.distributed as dist

import sparsepai as sp
from tests.dist_helpers import fsdp_linears, run_ranks

WORLD = 2
PER_RANK = 4
SPARSITY = 0.6
STEPS = 3


def _net():
    torch.manual_seed(0)  # 7 and 3 rows: uneven shards over 2 ranks
    return torch.nn.Sequential(torch.nn.Linear(6, 7), torch.nn.Tanh(), torch.nn.Linear(7, 9),
                               torch.nn.Tanh(), torch.nn.Linear(9, 3)).double()


def _sharded():
    return fsdp_linears(_net(), WORLD)


def _all_batches(n):
    g = torch.Generator().manual_seed(1)
    return [[(torch.randn(PER_RANK, 6, generator=g, dtype=torch.float64),
              torch.randint(0, 3, (PER_RANK,), generator=g)) for _ in range(WORLD)]
            for _ in range(n)]


def _concat(batches):
    return [(torch.cat([x for x, _ in b]), torch.cat([y for _, y in b])) for b in batches]


def _full(t):
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def _state(model):
    return [_full(t).clone() for t in list(model.parameters()) + list(model.buffers())]


CASES = [("magnitude", {}), ("snip", {"batches": 2}), ("force", {"iterations": 3}),
         ("prospr", {"meta_steps": 2, "inner_lr": 0.1, "first_order": True})]


def _train(model, masks, opt_cls, xs, share=None):
    params = dict(model.named_parameters())
    opt = opt_cls([params[n] for n in masks], list(masks.values()), lr=0.05)
    for x, y in xs:
        if share is not None:
            x, y = x[share], y[share]
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return params


def _worker(rank):
    from torch.distributed.tensor import DTensor

    group = dist.group.WORLD
    batches = _all_batches(3)
    mine, everything = [b[rank] for b in batches], _concat(batches)
    model = _sharded()
    before = _state(model)
    n_all = sum(p.numel() for n, p in model.named_parameters() if n.endswith("weight"))
    for method, opts in CASES:
        got = sp.prune(model, method, SPARSITY, mine, group=group, **opts)
        want = sp.prune(_net(), method, SPARSITY, everything, **opts)
        params = dict(model.named_parameters())
        kept = 0
        for n, w in want.items():
            m = got[n]
            assert isinstance(m, DTensor) and m.placements == params[n].placements, n
            assert m.to_local().shape == params[n].to_local().shape
            assert torch.equal(m.full_tensor(), w), (method, n)
            kept += int(m.full_tensor().sum())
        assert kept == n_all - round(SPARSITY * n_all), method
        assert all(torch.equal(a, b) for a, b in zip(_state(model), before)), method
    scores = sp.score(model, "snip", mine, group=group)
    want = sp.score(_net(), "snip", everything)
    for n, s in scores.items():
        assert isinstance(s, DTensor)
        torch.testing.assert_close(s.full_tensor(), want[n], rtol=1e-9, atol=1e-12)
    try:
        sp.prune(model, "prospr", SPARSITY, mine, group=group, meta_steps=1, first_order=False)
        raise AssertionError("expected ValueError for the full meta-gradient under FSDP2")
    except ValueError as e:
        assert "first_order=True" in str(e)
    # ProsPr steps the shards in place: a loss that turns NaN after the first step (on every
    # rank) still leaves the model as it was
    calls = []

    def nan_after_one_step(logits, y):
        calls.append(1)
        loss = torch.nn.functional.cross_entropy(logits, y)
        return loss * float("nan") if len(calls) == 2 else loss

    try:
        sp.prune(model, "prospr", SPARSITY, mine, group=group, meta_steps=2,
                 loss_fn=nan_after_one_step)
        raise AssertionError("expected FloatingPointError for a NaN inner loss")
    except FloatingPointError as e:
        assert "prospr inner step 1" in str(e), str(e)
    assert all(torch.equal(a, b) for a, b in zip(_state(model), before))

    # masked training on the shards equals unsharded masked training on all ranks' data
    masks = sp.prune(model, "snip", SPARSITY, mine, group=group)
    xs = [b for b in _concat(_all_batches(STEPS))]
    share = slice(rank * PER_RANK, (rank + 1) * PER_RANK)
    for opt_cls in (sp.optim.MaskedSGD, sp.optim.MaskedAdamW):
        sharded = _sharded()
        sp.apply_masks(sharded, masks)
        params = _train(sharded, masks, opt_cls, xs, share)
        plain = _net()
        full_masks = {n: m.full_tensor() for n, m in masks.items()}
        sp.apply_masks(plain, full_masks)
        ref = _train(plain, full_masks, opt_cls, xs)
        for n, m in full_masks.items():
            w = params[n].full_tensor()
            assert bool((w[~m] == 0).all()), (opt_cls.__name__, n)
            torch.testing.assert_close(w, ref[n].detach(), rtol=1e-9, atol=1e-12)


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed not available")
def test_fsdp2_masks_equal_unsharded_run_and_train_masked():
    assert run_ranks(_worker, WORLD, timeout=60) == {r: "ok" for r in range(WORLD)}


def _nan_worker(rank):
    net = _net()
    with torch.no_grad():
        net[2].weight[0, 0] = float("nan")  # row 0: in rank 0's shard only
    model = fsdp_linears(net, WORLD)
    try:
        sp.prune(model, "magnitude", SPARSITY, group=dist.group.WORLD)
    except ValueError as e:  # every rank, not only the one holding the NaN
        assert str(e).startswith("prune: method 'magnitude' gave NaN scores in 1 of 3 layers "
                                 "(2.weight)"), str(e)
        return
    raise AssertionError("NaN scores gave masks")


def test_fsdp2_nan_scores_raise_on_every_rank():
    assert run_ranks(_nan_worker, WORLD, timeout=60) == {r: "ok" for r in range(WORLD)}
