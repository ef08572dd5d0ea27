"""sp.topk_mask / sp.kth_largest and their building blocks against the concatenate-and-stable-sort
oracle. Every test runs on the grid of tests/ops/grid.py (each available backend forced)."""

import math

import pytest
import torch

import sparsepai as sp
from sparsepai._ext import has_extension
from sparsepai.ops.topk_ref import (
    first_nan_ref,
    key_histogram_ref,
    order_keys_ref,
    threshold_masks_ref,
    topk_mask_ref,
)

OPS = ("topk_mask", "kth_largest", "key_histogram", "threshold_masks", "first_nan")
DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
needs_ext = pytest.mark.skipif(not has_extension(), reason="compiled extension not built")


def assert_matches_ref(scores, k, largest=True, nan="error"):
    res = sp.topk_mask(scores, k, largest=largest, nan=nan)
    thr, masks = topk_mask_ref(scores, k, largest, nan)
    assert res.kept == k
    assert len(res.masks) == len(scores)
    for i, (got, want, s) in enumerate(zip(res.masks, masks, scores)):
        assert got.dtype == torch.bool and got.shape == s.shape and got.device == s.device
        assert torch.equal(got.cpu(), want.cpu()), f"mask {i} differs (k={k}, largest={largest})"
    assert sum(int(m.sum()) for m in res.masks) == k
    assert res.threshold.dtype == thr.dtype and res.threshold.dim() == 0
    assert torch.equal(res.threshold.cpu(), thr.cpu()), (res.threshold, thr)
    kth = sp.kth_largest(scores, k, largest=largest, nan=nan)
    assert torch.equal(kth.cpu(), thr.cpu())
    return res


def random_scores(device, dtype, sizes, seed=0, ints=None):
    g = torch.Generator().manual_seed(seed)
    out = []
    for size in sizes:
        if ints:
            t = torch.randint(-ints, ints + 1, size, generator=g).to(dtype)
        else:
            t = torch.randn(size, generator=g, dtype=torch.float64).to(dtype)
        out.append(t.to(device))
    return out


def ks_for(n):
    return sorted({0, 1, 2, n // 7, n // 2, n - 1, n} & set(range(n + 1)))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("largest", [True, False])
def test_random_matches_ref(device, dtype, largest):
    scores = random_scores(device, dtype, [(100, 37), (0,), (5, 6, 7), (1,), (2048,)])
    n = sum(s.numel() for s in scores)
    for k in ks_for(n):
        assert_matches_ref(scores, k, largest)


@pytest.mark.parametrize("dtype", DTYPES)
def test_ties_break_by_position(device, dtype):
    # few distinct values: almost every threshold lands in a large block of ties
    scores = random_scores(device, dtype, [(300,), (17, 19), (1000,)], seed=1, ints=3)
    n = sum(s.numel() for s in scores)
    for k in range(0, n + 1, 97):
        for largest in (True, False):
            assert_matches_ref(scores, k, largest)


def test_tie_order_is_list_then_flat_index():
    a = torch.ones(2, 3)
    b = torch.ones(4)
    res = sp.topk_mask([a, b], 7)
    assert res.masks[0].all() and res.masks[1].tolist() == [True, False, False, False]
    res = sp.topk_mask([a.t(), b], 2)  # row-major order of the transposed view
    assert res.masks[0].tolist() == [[True, True], [False, False], [False, False]]


@pytest.mark.parametrize("dtype", DTYPES)
def test_constant_and_signed_zeros(device, dtype):
    z = torch.tensor([0.0, -0.0, 0.0, -0.0, 1.0, -1.0], dtype=dtype, device=device)
    for k in range(7):
        assert_matches_ref([z], k)
        assert_matches_ref([z], k, largest=False)
    # -0.0 and +0.0 tie: the earlier one wins, whatever its sign
    res = sp.topk_mask([z], 3)
    assert res.masks[0].tolist() == [True, True, False, False, True, False]
    c = torch.full((5000,), 2.5, dtype=dtype, device=device)
    assert_matches_ref([c, c[:10]], 4321)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("nan", ["low", "high"])
def test_nan_policies(device, dtype, nan):
    scores = random_scores(device, dtype, [(50,), (7, 9)], seed=2)
    scores[0][[3, 10, 11]] = float("nan")
    scores[1][2, 4] = float("nan")
    scores[1][0, 0] = float("inf")
    scores[1][0, 1] = float("-inf")
    n = sum(s.numel() for s in scores)
    for k in range(n + 1):
        for largest in (True, False):
            res = assert_matches_ref(scores, k, largest, nan)
            assert not torch.isnan(res.threshold)


def test_nan_threshold_is_infinite():
    x = torch.tensor([float("nan"), 1.0, float("nan")])
    assert sp.kth_largest([x], 2, nan="high").item() == math.inf
    assert sp.kth_largest([x], 3, nan="low").item() == -math.inf
    assert sp.kth_largest([x], 1, nan="low").item() == 1.0


@pytest.mark.parametrize("dtype", DTYPES)
def test_nan_error_names_tensor(device, dtype):
    scores = random_scores(device, dtype, [(10,), (20,), (30,)])
    scores[2][5] = float("nan")
    for k in (0, 1, 30):
        with pytest.raises(ValueError, match=r"scores\[2\]"):
            sp.topk_mask(scores, k)
        with pytest.raises(ValueError, match=r"scores\[2\]"):
            sp.kth_largest(scores, k)


@pytest.mark.parametrize("dtype", DTYPES)
def test_non_contiguous(device, dtype):
    base = random_scores(device, dtype, [(40, 30, 6)], seed=3)[0]
    views = [base.transpose(0, 2), base[:, ::3, 1], base[::2].permute(1, 0, 2), base[5, :, 2:4]]
    assert not any(v.is_contiguous() for v in views)
    n = sum(v.numel() for v in views)
    for k in ks_for(n):
        assert_matches_ref(views, k)
        assert_matches_ref(views, k, largest=False)


def test_mixed_dtypes():
    scores = [
        torch.randn(100, dtype=torch.float16),
        torch.randn(100, dtype=torch.bfloat16),
        torch.randn(100, dtype=torch.float32),
    ]
    res = assert_matches_ref(scores, 150)
    assert res.threshold.dtype == torch.float32
    res = assert_matches_ref(scores + [torch.randn(10, dtype=torch.float64)], 77)
    assert res.threshold.dtype == torch.float64


def test_empty_inputs():
    res = sp.topk_mask([], 0)
    assert res.masks == [] and res.kept == 0 and res.threshold.item() == math.inf
    assert sp.kth_largest([], 0, largest=False).item() == -math.inf
    res = sp.topk_mask([torch.zeros(0), torch.zeros(3, 0)], 0)
    assert [m.shape for m in res.masks] == [(0,), (3, 0)]
    with pytest.raises(ValueError, match="k must be in"):
        sp.topk_mask([torch.zeros(0)], 1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("largest", [True, False])
def test_sampled_bracket_path(dtype, largest):
    # above 2**22 scores the kernel brackets the k-th value with a sample; check all of it
    g = torch.Generator().manual_seed(4)
    scores = [torch.randn(2_500_000, generator=g, dtype=dtype), torch.rand(1_800_000, generator=g,
              dtype=dtype) * 4 - 2, torch.randn(300, 500, generator=g, dtype=dtype).t()]
    n = sum(s.numel() for s in scores)
    for k in (1, n // 3, n - 5):
        assert_matches_ref(scores, k, largest)


def test_sampled_bracket_with_heavy_ties():
    # a bracket that holds most keys overflows its memory guard and falls back to radix passes
    g = torch.Generator().manual_seed(5)
    x = torch.randint(0, 3, (4_500_000,), generator=g).float()
    for k in (10, 1_000_000, 4_499_999):
        assert_matches_ref([x], k)


@pytest.mark.parametrize("largest", [True, False])
def test_sampled_bracket_ties_straddle_chunks(largest):
    # the one-pass (fused) path writes masks before it knows the threshold: runs of tied scores
    # across every 65536-score chunk boundary, NaNs ranked high, and k inside the ties
    g = torch.Generator().manual_seed(7)
    x = torch.randn(4_400_000, generator=g)
    for b in range(65536, x.numel(), 65536):
        x[b - 30:b + 30] = 1.25
    x[::100_003] = float("nan")
    y = torch.randn(500, 600, generator=g).t()
    y[::7, ::3] = 1.25
    scores = [x, y]
    nans = int(x.isnan().sum())
    beyond = sum(int((s > 1.25).sum() if largest else (s < 1.25).sum()) for s in scores)
    first = nans if largest else 0
    for k in (first + beyond + 1, first + beyond + 500):
        assert_matches_ref(scores, k, largest, nan="high")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one = sp.topk_mask(scores, first + beyond + 77, largest=largest, nan="high")
    finally:
        torch.set_num_threads(before)
    two = sp.topk_mask(scores, first + beyond + 77, largest=largest, nan="high")
    assert all(torch.equal(a, b) for a, b in zip(one.masks, two.masks))


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_same_masks_for_any_thread_count(threads):
    g = torch.Generator().manual_seed(6)
    scores = [torch.randint(0, 50, (4_300_000,), generator=g).float(),
              torch.randn(300_000, generator=g)]
    torch.set_num_threads(1)
    want = sp.topk_mask(scores, 777_777)
    torch.set_num_threads(threads)
    got = sp.topk_mask(scores, 777_777)
    assert all(torch.equal(a, b) for a, b in zip(got.masks, want.masks))
    assert torch.equal(got.threshold, want.threshold)


def test_bad_input():
    x = torch.randn(10)
    with pytest.raises(ValueError, match="k must be in"):
        sp.topk_mask([x], -1)
    with pytest.raises(ValueError, match="k must be in"):
        sp.topk_mask([x], 11)
    with pytest.raises(TypeError, match="k must be an int"):
        sp.topk_mask([x], 2.0)
    with pytest.raises(TypeError, match="k must be an int"):
        sp.topk_mask([x], True)
    with pytest.raises(TypeError, match=r"scores\[1\].*int64"):
        sp.topk_mask([x, torch.arange(3)], 1)
    with pytest.raises(TypeError, match=r"scores\[0\] is a list"):
        sp.topk_mask([[1.0, 2.0]], 1)
    with pytest.raises(ValueError, match="one device"):
        sp.topk_mask([x, torch.randn(3, device="meta")], 1)
    with pytest.raises(ValueError, match="nan must be"):
        sp.topk_mask([x], 1, nan="ignore")
    # numpy / torch integer k are fine
    assert sp.topk_mask([x], torch.tensor(3)).kept == 3


@needs_ext
@pytest.mark.parametrize("dtype", DTYPES)
def test_key_transform_orders_like_values(dtype):
    # every 16-bit pattern (all of fp16/bf16), and random wider patterns, in sorted-value order
    if dtype in (torch.float16, torch.bfloat16):
        vals = torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16).view(dtype)
    else:
        vals = torch.randn(10000, dtype=torch.float64).to(dtype) * 1e3
        vals = torch.cat([vals, torch.tensor([0.0, -0.0, math.inf, -math.inf], dtype=dtype)])
    vals = vals[~torch.isnan(vals)]
    keys = order_keys_ref(vals, 1, True, dtype)
    if dtype == torch.float64:
        keys = keys ^ torch.iinfo(torch.int64).min
    order_v = torch.sort(vals.double(), stable=True).values
    order_k = vals.double()[torch.sort(keys, stable=True).indices]
    assert torch.equal(order_v, order_k)


@needs_ext
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("largest", [True, False])
def test_building_block_ops_match_refs(dtype, largest):
    scores = random_scores("cpu", dtype, [(300,), (20, 30)], seed=7, ints=40)
    scores[0][4] = float("nan")
    scores.append(scores[1].t())
    ops = torch.ops.sparsepai
    bits = {torch.float16: 16, torch.bfloat16: 16, torch.float32: 32, torch.float64: 64}[dtype]
    for nan in (1, 2):
        h = ops.key_histogram(scores, bits - 16, 16, 0, largest, nan)
        assert torch.equal(h, key_histogram_ref(scores, bits - 16, 16, 0, largest, nan))
        top = int(torch.nonzero(h).max())
        if bits > 16:
            h2 = ops.key_histogram(scores, bits - 27, 11, top, largest, nan)
            assert torch.equal(h2, key_histogram_ref(scores, bits - 27, 11, top, largest, nan))
        key = int(order_keys_ref(scores[1][3, 3], nan, largest, dtype)[0])
        for budget in (0, 1, 5, 10**6):
            got = ops.threshold_masks(scores, key, budget, largest, nan)
            want = threshold_masks_ref(scores, key, budget, largest, nan)
            assert all(torch.equal(a, b) for a, b in zip(got, want))
    assert int(ops.first_nan(scores)) == int(first_nan_ref(scores)) == 0
    assert int(ops.first_nan(scores[1:])) == -1


@needs_ext
def test_opcheck_every_op():
    scores = [torch.randn(50, 3), torch.randn(0), torch.randn(7, 11).t()]
    ops = torch.ops.sparsepai
    cases = [
        (ops.topk_mask.default, (scores, 20, True, 1)),
        (ops.kth_largest.default, (scores, 20, False, 0)),
        (ops.key_histogram.default, (scores, 16, 16, 0, True, 0)),
        (ops.threshold_masks.default, (scores, 2**31, 3, True, 1)),
        (ops.first_nan.default, (scores,)),
    ]
    for op, args in cases:
        torch.library.opcheck(op, args)


@needs_ext
def test_torch_compile_fullgraph():
    def f(a, b):
        res = sp.topk_mask([a * 2, b], 10)
        return res.masks[0].sum() + res.masks[1].sum(), res.threshold

    a, b = torch.randn(30), torch.randn(4, 5)
    total, thr = torch.compile(f, fullgraph=True)(a, b)
    assert int(total) == 10
    assert torch.equal(thr, topk_mask_ref([a * 2, b], 10)[0])


_HUGE = """
import torch, sparsepai as sp
# float16 keeps it to ~4.3 GB; the distinct values sit past index 2**31 so that 32-bit
# indexing anywhere would misplace them
n = 2**31 + 4096
x = torch.zeros(n, dtype=torch.float16)
hot = torch.tensor([2**31 + 5, 2**31 + 6, 2**31 + 4000, 7, 2**31 - 1])
x[hot] = torch.tensor([3.0, 2.0, 2.0, 2.0, 1.0], dtype=torch.float16)
x[2**31 + 100] = -1.0
CH = 2**26  # reductions chunk by chunk: a bool .sum() over 2**31 makes an int64 copy (17 GB)


def count(m):
    return sum(int(c.sum()) for c in m.split(CH))


def where(m):
    return [i * CH + int(j) for i, c in enumerate(m.split(CH)) for j in torch.nonzero(c).flatten()]


res = sp.topk_mask([x], 3)
m = res.masks[0]
assert res.threshold.item() == 2.0 and count(m) == 3
# 3.0 plus the first two 2.0s in position order: index 7 and 2**31 + 6
assert where(m) == [7, 2**31 + 5, 2**31 + 6]
del m, res
# k far beyond 2**31: the single -1.0 is the only one left out, ties among the zeros
res = sp.topk_mask([x], n - 1)
assert count(res.masks[0]) == n - 1 and not bool(res.masks[0][2**31 + 100])
del res
assert sp.kth_largest([x], 1, largest=False).item() == -1.0
print("ok")
"""


@pytest.mark.slow
@needs_ext
def test_more_than_2_31_scores_in_one_tensor():
    # a fresh process (~7 GB at its peak), whatever earlier tests left in this one's heap
    import subprocess
    import sys

    p = subprocess.run([sys.executable, "-c", _HUGE], capture_output=True, text=True,
                       timeout=900)
    assert p.returncode == 0 and p.stdout.strip() == "ok", p.stderr[-2000:]


def test_scores_that_require_grad():
    # the usual call site: scores computed from parameters
    w = torch.nn.Parameter(torch.randn(20, 30))
    res = sp.topk_mask([w.abs(), w * w], 100)
    assert not res.threshold.requires_grad and not any(m.requires_grad for m in res.masks)
    want = topk_mask_ref([w.detach().abs(), (w * w).detach()], 100)[1]
    assert all(torch.equal(a, b) for a, b in zip(res.masks, want))
