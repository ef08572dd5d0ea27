"""sp.score / sp.prune(group=) on a replicated model with 3 gloo processes: every rank's masks
equal one process's on the concatenation of all ranks' batches (per batch index), for every
method; DDP-wrapped models; structured pruning; ranks called with different arguments (or
holding different weights) all raise the same clear error instead of hanging."""

import pytest
import torch
import torch.distributed as dist

import sparsepai as sp
from tests.dist_helpers import run_ranks

WORLD = 3
PER_RANK = 4
SPARSITY = 0.7


def _net():
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.Tanh(),
        torch.nn.Conv2d(4, 6, 3, stride=2), torch.nn.ReLU(),
        torch.nn.Flatten(), torch.nn.Linear(6 * 3 * 3, 5)).double()


def _all_batches(n):
    """[batch index][rank] -> (x, y): each rank's own data, known to every rank for the oracle."""
    g = torch.Generator().manual_seed(1)
    return [[(torch.randn(PER_RANK, 1, 8, 8, generator=g, dtype=torch.float64),
              torch.randint(0, 5, (PER_RANK,), generator=g)) for _ in range(WORLD)]
            for _ in range(n)]


def _concat(batches):
    return [(torch.cat([x for x, _ in b]), torch.cat([y for _, y in b])) for b in batches]


CASES = [  # (method, options)
    ("snip", {"batches": 2}),
    ("grasp", {"batches": 2}),
    ("prospr", {"meta_steps": 2, "inner_lr": 0.05, "inner_momentum": 0.5}),
    ("prospr", {"meta_steps": 2, "inner_lr": 0.05, "first_order": True}),
    ("force", {"iterations": 3}),
    ("synflow", {"rounds": 4}),
    ("magnitude", {}),
    ("random", {"seed": 3}),
]


def _predictor():
    """An untrained AutoSparse predictor (a fixed random net): prediction runs on each rank,
    on the gradients averaged over the ranks."""
    from sparsepai.autosparse.predictor import Predictor, PredictorConfig, build_net

    torch.manual_seed(5)
    cfg = PredictorConfig()
    return Predictor(build_net(cfg), cfg, seen_layer_types=("Conv2d", "Linear"))


def _worker(rank):
    group = dist.group.WORLD
    batches = _all_batches(3)
    mine = [b[rank] for b in batches]
    everything = _concat(batches)
    model = _net()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for method, opts in CASES + [("autosparse", {"predictor": _predictor()})]:
        got = sp.prune(model, method, SPARSITY, mine, group=group, **opts)
        want = sp.prune(model, method, SPARSITY, everything, **opts)
        assert list(got) == list(want)
        for n in want:
            assert torch.equal(got[n], want[n]), (method, opts, n)
        if method in ("snip", "grasp", "prospr"):
            s_got = sp.score(model, method, mine, group=group, **opts)
            s_want = sp.score(model, method, everything, **opts)
            for n in s_want:
                torch.testing.assert_close(s_got[n], s_want[n], rtol=1e-9, atol=1e-12)
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n]), "the model changed"
    assert all(p.grad is None for p in model.parameters())

    # DDP: names carry DDP's "module." prefix, the masks are the plain model's
    ddp = torch.nn.parallel.DistributedDataParallel(_net())
    got = sp.prune(ddp, "snip", SPARSITY, mine, group=group)
    want = sp.prune(_net(), "snip", SPARSITY, everything)
    assert {n: m for n, m in got.items()}.keys() == {"module." + n for n in want}
    for n in want:
        assert torch.equal(got["module." + n], want[n]), n

    # structured: the same channel masks on every rank, equal to one process on all data
    got = sp.prune(model, "snip", 0.5, mine, structured=True, group=group)
    want = sp.prune(model, "snip", 0.5, everything, structured=True)
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    # the test can fail: without group= the ranks' masks differ from the oracle's
    local = sp.prune(model, "snip", SPARSITY, mine)
    assert not all(torch.equal(local[n], m) for n, m in
                   sp.prune(model, "snip", SPARSITY, everything).items())
    _mismatches(rank, model, mine)


def _raises_everywhere(match, fn):
    try:
        fn()
    except ValueError as e:
        assert match in str(e), str(e)
    else:
        raise AssertionError(f"expected ValueError ({match})")


def _mismatches(rank, model, mine):
    group = dist.group.WORLD
    _raises_everywhere("same sparsity", lambda: sp.prune(
        model, "snip", 0.5 + 0.1 * (rank == 1), mine, group=group))
    _raises_everywhere("same method", lambda: sp.prune(
        model, "snip" if rank else "grasp", 0.5, mine, group=group))
    _raises_everywhere("same options", lambda: sp.score(
        model, "snip", mine, group=group, batches=1 + (rank == 2)))
    other = _net() if rank != 2 else torch.nn.Sequential(*_net()[:-1], torch.nn.Linear(54, 5))
    _raises_everywhere("model weights", lambda: sp.prune(
        other.double(), "magnitude", 0.5, group=group))
    _raises_everywhere("same k", lambda: sp.topk_mask(
        [torch.rand(10)], 3 + rank, group=group))
    try:
        sp.prune(model, "magnitude", 0.5, group="WORLD")
        raise AssertionError("expected TypeError for group='WORLD'")
    except TypeError as e:
        assert "group must be a torch.distributed ProcessGroup" in str(e)


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed not available")
def test_replicated_prune_equals_one_process_on_all_batches():
    assert run_ranks(_worker, WORLD, timeout=60) == {r: "ok" for r in range(WORLD)}
