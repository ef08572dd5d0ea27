"""MaskedSGD under DistributedDataParallel, 2 gloo processes: ranks stay identical, pruned
weights stay zero, and training equals one process on the whole batch (DDP averages the ranks'
gradients; each rank's loss is a mean over an equal share of the batch)."""

import pytest
import torch
import torch.distributed as dist

import sparsepai as sp
from tests.dist_helpers import run_ranks

WORLD = 2
STEPS = 8


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 12), torch.nn.Tanh(), torch.nn.Linear(12, 3))


def _masks(model):
    g = torch.Generator().manual_seed(1)
    return {n: torch.rand(p.shape, generator=g) < 0.4 for n, p in model.named_parameters()
            if p.dim() > 1}


def _data():
    g = torch.Generator().manual_seed(2)
    return torch.randn(STEPS, 8 * WORLD, 6, generator=g), torch.randint(0, 3, (STEPS, 8 * WORLD), generator=g)


def _train_single():
    model = _model()
    sp.apply_masks(model, _masks(model))
    opt = sp.optim.MaskedSGD(model.named_parameters(), None, lr=0.1, momentum=0.9)
    xs, ys = _data()
    for x, y in zip(xs, ys):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return [p.detach() for p in model.parameters()]


def _worker(rank):
    model = _model()
    masks = _masks(model)
    sp.apply_masks(model, masks)
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    opt = sp.optim.MaskedSGD(ddp.named_parameters(), None, lr=0.1, momentum=0.9)
    xs, ys = _data()
    for x, y in zip(xs, ys):
        opt.zero_grad()
        share = slice(rank * 8, (rank + 1) * 8)
        torch.nn.functional.cross_entropy(ddp(x[share]), y[share]).backward()
        opt.step()
    params = dict(model.named_parameters())
    for n, m in masks.items():
        assert bool((params[n][~m] == 0).all()), n
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    gathered = [torch.empty_like(flat) for _ in range(WORLD)]
    dist.all_gather(gathered, flat)
    assert torch.equal(gathered[0], gathered[1]), "ranks diverged"
    want = torch.cat([p.reshape(-1) for p in _train_single()])
    torch.testing.assert_close(flat, want, rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed not available")
def test_masked_sgd_under_ddp():
    assert run_ranks(_worker, WORLD) == {0: "ok", 1: "ok"}
