"""sp.topk_mask / sp.kth_largest with transform="abs": the ranking of |x| computed from x (no
|x| tensor), against the stable-sort oracle of x.abs() and against the op on a materialised
x.abs()."""

import pytest
import torch

import sparsepai as sp
from sparsepai._ext import has_extension
from sparsepai.ops import dispatch
from sparsepai.ops.topk_ref import (
    key_histogram_ref,
    order_keys_ref,
    threshold_masks_ref,
    topk_mask_ref,
)
from sparsepai.ops._triton import has_triton

DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
needs_ext = pytest.mark.skipif(not has_extension(), reason="compiled extension not built")


def _scores(dtype, device="cpu", seed=0, n=2000):
    g = torch.Generator().manual_seed(seed)
    a = torch.randint(-6, 7, (n,), generator=g).to(dtype)  # +-v tie in |x|
    a[::37] = -0.0
    a[5::101] = float("nan")
    b = torch.randn(40, 31, generator=g, dtype=torch.float64).to(dtype).t()  # strided
    b[::3] = -b[::3].abs()
    return [a.to(device), torch.empty(0, dtype=dtype, device=device), b.to(device)]


def _check(scores, k, largest, nan):
    got = sp.topk_mask(scores, k, largest=largest, nan=nan, transform="abs")
    thr, want = topk_mask_ref([s.cpu() for s in scores], k, largest, nan, transform=1)
    mat = sp.topk_mask([s.abs() for s in scores], k, largest=largest, nan=nan)
    assert got.kept == k
    for g, w, m, s in zip(got.masks, want, mat.masks, scores):
        assert g.shape == s.shape and g.dtype == torch.bool and g.device == s.device
        assert torch.equal(g.cpu(), w) and torch.equal(g, m)
    assert torch.equal(got.threshold.cpu(), thr) and torch.equal(got.threshold, mat.threshold)
    kth = sp.kth_largest(scores, k, largest=largest, nan=nan, transform="abs")
    assert torch.equal(kth.cpu(), thr)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("largest", [True, False])
def test_abs_matches_oracle(device, dtype, largest):
    scores = _scores(dtype, device)
    n = sum(s.numel() for s in scores)
    for nan in ("low", "high"):
        for k in (0, 1, 17, 700, 1001, n // 2, n - 1, n):
            _check(scores, k, largest, nan)


def test_abs_is_not_the_signed_ranking():
    x = torch.tensor([-5.0, 1.0, 2.0, -0.5])
    res = sp.topk_mask([x], 2, transform="abs")
    assert res.masks[0].tolist() == [True, False, True, False] and float(res.threshold) == 2.0
    res = sp.topk_mask([x], 1, largest=False, transform="abs")
    assert res.masks[0].tolist() == [False, False, False, True] and float(res.threshold) == 0.5


def test_abs_nan_error_names_tensor():
    scores = _scores(torch.float32)
    with pytest.raises(ValueError, match=r"scores\[0\] contains NaN"):
        sp.topk_mask(scores, 5, transform="abs")
    with pytest.raises(ValueError, match="transform must be"):
        sp.topk_mask(scores, 5, nan="low", transform="square")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_abs_large_tables_sampled_bracket(dtype):
    # above 2**22 scores the kernel samples a bracket and fuses the mask pass
    g = torch.Generator().manual_seed(4)
    x = torch.randn(4_300_000, generator=g, dtype=dtype)
    x[::2] = -x[1::2]  # every |x| tied with its neighbour
    y = torch.randn(300, 500, generator=g, dtype=dtype).t()
    n = x.numel() + y.numel()
    for k in (n // 10, n - 7):
        for largest in (True, False):
            _check([x, y], k, largest, "error")


def test_abs_mixed_dtypes():
    g = torch.Generator().manual_seed(2)
    scores = [torch.randint(-3, 4, (500,), generator=g).to(dt)
              for dt in (torch.float16, torch.bfloat16, torch.float32)]
    for k in (1, 300, 1499):
        _check(scores, k, True, "error")


@needs_ext
@pytest.mark.parametrize("dtype", DTYPES)
def test_abs_building_blocks_match_refs(dtype):
    scores = _scores(dtype)
    ops = torch.ops.sparsepai
    bits = {torch.float16: 16, torch.bfloat16: 16, torch.float32: 32, torch.float64: 64}[dtype]
    for largest in (True, False):
        for nan in (1, 2):
            h = ops.key_histogram(scores, bits - 16, 16, 0, largest, nan, 1)
            assert torch.equal(h, key_histogram_ref(scores, bits - 16, 16, 0, largest, nan, 1))
            key = int(order_keys_ref(scores[2][3, 3].abs(), nan, largest, dtype)[0])
            for budget in (0, 3, 10**6):
                got = ops.threshold_masks(scores, key, budget, largest, nan, 1)
                want = threshold_masks_ref(scores, key, budget, largest, nan, 1)
                assert all(torch.equal(a, b) for a, b in zip(got, want))


@needs_ext
def test_abs_opcheck():
    scores = [torch.randn(50, 3), torch.randn(0), torch.randn(7, 11).t()]
    ops = torch.ops.sparsepai
    for op, args in [
        (ops.topk_mask.default, (scores, 20, True, 1, 1)),
        (ops.kth_largest.default, (scores, 20, False, 0, 1)),
        (ops.key_histogram.default, (scores, 16, 16, 0, True, 0, 1)),
        (ops.threshold_masks.default, (scores, 2**31, 3, True, 1, 1)),
    ]:
        torch.library.opcheck(op, args)
    with pytest.raises(ValueError, match="transform must be"):
        ops.topk_mask(scores, 3, True, 1, 2)


@pytest.mark.skipif(not has_triton(), reason="Triton not installed")
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
def test_abs_through_triton(dtype):
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    scores = _scores(dtype, dev, n=1500)
    n = sum(s.numel() for s in scores)
    with dispatch.use_backend("triton"):
        for k in (1, 700, n - 1):
            for largest in (True, False):
                _check(scores, k, largest, "high")


def test_abs_through_reference_backend():
    scores = _scores(torch.bfloat16)
    with dispatch.use_backend("reference"):
        for k in (0, 9, 1200):
            _check(scores, k, False, "low")
