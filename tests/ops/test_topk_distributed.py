"""sp.topk_mask(group=...) with 2 processes on the gloo backend against the single-process oracle
over the concatenated shards (rank order)."""

import os

import pytest
import torch
import torch.distributed as dist

import sparsepai as sp
from sparsepai.ops.topk_ref import topk_mask_ref
from tests.dist_helpers import run_ranks

WORLD = 2


def _shards(dtype):
    g = torch.Generator().manual_seed(0)
    a = torch.randint(0, 7, (2000,), generator=g).to(dtype)
    b = torch.randn(30, 40, generator=g, dtype=torch.float64).to(dtype).t()
    c = torch.randint(0, 7, (1500,), generator=g).to(dtype)
    c[10] = float("nan")
    return [[a, b], [c, torch.zeros(0, dtype=dtype)]]


def _worker(rank):
    for dtype in (torch.float32, torch.float16, torch.float64):
        shards = _shards(dtype)
        mine = shards[rank]
        everything = shards[0] + shards[1]
        n = sum(s.numel() for s in everything)
        for k in (0, 1, 999, 2000, n - 1, n):
            for largest in (True, False):
                for nan in ("low", "high"):
                    res = sp.topk_mask(mine, k, largest=largest, nan=nan, group=dist.group.WORLD)
                    thr, want = topk_mask_ref(everything, k, largest, nan)
                    want_mine = want[:2] if rank == 0 else want[2:]
                    assert torch.equal(res.threshold, thr), (dtype, k, largest, nan)
                    for got, w in zip(res.masks, want_mine):
                        assert torch.equal(got, w), (dtype, k, largest, nan)
                    kth = sp.kth_largest(mine, k, largest=largest, nan=nan,
                                         group=dist.group.WORLD)
                    assert torch.equal(kth, thr)
        # |x| ranked from x (transform="abs") through the same histogram passes
        for k in (1, 999, n - 1):
            res = sp.topk_mask(mine, k, nan="high", transform="abs", group=dist.group.WORLD)
            thr, want = topk_mask_ref(everything, k, True, "high", transform=1)
            assert torch.equal(res.threshold, thr), (dtype, k, "abs")
            for got, w in zip(res.masks, want[:2] if rank == 0 else want[2:]):
                assert torch.equal(got, w), (dtype, k, "abs")
        # the NaN sits on rank 1: every rank raises, naming it
        try:
            sp.topk_mask(mine, 5, group=dist.group.WORLD)
            raise AssertionError("expected ValueError for NaN")
        except ValueError as e:
            assert "rank 1" in str(e) and "scores[0]" in str(e), str(e)
        try:
            sp.topk_mask(mine, n + 1, nan="low", group=dist.group.WORLD)
            raise AssertionError("expected ValueError for k > N")
        except ValueError as e:
            assert "k must be in" in str(e)


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed not available")
def test_two_gloo_ranks_match_single_process_oracle():
    assert run_ranks(_worker, WORLD) == {0: "ok", 1: "ok"}


def _triton_worker(rank):
    # the driver's building blocks (key_histogram, threshold_masks, first_nan) through the
    # Triton backend (under TRITON_INTERPRET=1 on CPU tensors without a GPU)
    from sparsepai.ops import dispatch

    shards = _shards(torch.float32)
    mine, everything = shards[rank], shards[0] + shards[1]
    with dispatch.use_backend("triton"):
        for k in (1, 999, 3500):
            res = sp.topk_mask(mine, k, nan="high", group=dist.group.WORLD)
            thr, want = topk_mask_ref(everything, k, True, "high")
            assert torch.equal(res.threshold, thr)
            assert all(torch.equal(a, b) for a, b in
                       zip(res.masks, want[:2] if rank == 0 else want[2:]))


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed not available")
def test_two_gloo_ranks_through_the_triton_backend():
    from sparsepai.ops._triton import has_triton

    if not has_triton() or os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("gloo shards are CPU tensors: Triton runs them under TRITON_INTERPRET=1 only")
    assert run_ranks(_triton_worker, WORLD) == {0: "ok", 1: "ok"}
