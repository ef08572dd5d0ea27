"""The Triton top-k path end to end: sp.topk_mask / sp.kth_largest (and the distributed driver's
building blocks) with the Triton backend forced, against the stable-sort oracle. Without a GPU
the kernels run on CPU tensors under TRITON_INTERPRET=1 (set by tests/conftest.py)."""

import pytest
import torch

import sparsepai as sp
from sparsepai.ops import dispatch
from sparsepai.ops.topk_ref import (
    first_nan_ref,
    key_histogram_ref,
    order_keys_ref,
    threshold_masks_ref,
    topk_mask_ref,
)
from sparsepai.ops._triton import has_triton

pytestmark = pytest.mark.skipif(not has_triton(), reason="Triton not installed")

DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
DEV = "cuda" if torch.cuda.is_available() else "cpu"
BITS = {torch.float16: 16, torch.bfloat16: 16, torch.float32: 32, torch.float64: 64}


@pytest.fixture
def triton_calls(monkeypatch):
    """Forces the Triton backend and counts the calls that reach each Triton function."""
    calls = {}
    with dispatch.use_backend("triton"):
        for op, (where, _) in dispatch.OPS.items():
            if where is None:
                continue
            real = dispatch.implementation(op, "triton")

            def spy(*args, _real=real, _op=op):
                calls[_op] = calls.get(_op, 0) + 1
                return _real(*args)

            monkeypatch.setitem(dispatch._IMPLS, where, spy)
        yield calls


def _scores(dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = torch.randint(-20, 21, (1500,), generator=g).to(dtype)  # many ties, across blocks
    a[::97] = -0.0
    b = torch.randn(30, 41, generator=g, dtype=torch.float64).to(dtype).t()  # non-contiguous
    b[3, 4] = float("nan")
    b[5, 6] = float("inf")
    return [a.to(DEV), torch.empty(0, dtype=dtype, device=DEV), b.to(DEV)]


def _check(scores, k, largest, nan):
    res = sp.topk_mask(scores, k, largest=largest, nan=nan)
    want_thr, want = topk_mask_ref([s.cpu() for s in scores], k, largest, nan)
    for got, w, s in zip(res.masks, want, scores):
        assert got.device == s.device and got.shape == s.shape and got.dtype == torch.bool
        assert torch.equal(got.cpu(), w)
    assert torch.equal(res.threshold.cpu(), want_thr) and res.kept == k
    assert torch.equal(sp.kth_largest(scores, k, largest=largest, nan=nan).cpu(), want_thr)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("nan", ["low", "high"])
def test_topk_mask_through_the_public_api(triton_calls, dtype, nan):
    scores = _scores(dtype, seed=1)
    n = sum(s.numel() for s in scores)
    for k in (0, 1, 700, 1021, n - 1, n):  # 700/1021: the threshold inside a run of ties
        for largest in (True, False):
            _check(scores, k, largest, nan)
    assert triton_calls["topk_mask"] > 0 and triton_calls["kth_largest"] > 0


def test_mixed_dtypes_and_many_tensors(triton_calls):
    g = torch.Generator().manual_seed(3)
    scores = [torch.randint(-3, 4, (n,), generator=g).to(dt).to(DEV)
              for n, dt in ((2000, torch.float16), (5, torch.bfloat16), (1100, torch.float32))]
    for k in (1, 17, 1500, 3104):
        _check(scores, k, True, "error")
        _check(scores, k, False, "error")
    assert triton_calls["topk_mask"] == 8


def test_nan_error_names_the_tensor(triton_calls):
    scores = _scores(torch.float32)
    for k in (0, 1, 30):
        with pytest.raises(ValueError, match=r"scores\[2\] contains NaN"):
            sp.topk_mask(scores, k)
        with pytest.raises(ValueError, match=r"scores\[2\] contains NaN"):
            sp.kth_largest(scores, k)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("largest", [True, False])
def test_building_blocks_through_the_table(triton_calls, dtype, largest):
    # what the distributed driver calls: key_histogram, threshold_masks, first_nan
    scores = _scores(dtype)
    cpu = [s.cpu() for s in scores]
    bits = BITS[dtype]
    for nan in (1, 2):
        h = dispatch.call("key_histogram", DEV, scores, bits - 16, 16, 0, largest, nan)
        assert torch.equal(h.cpu(), key_histogram_ref(cpu, bits - 16, 16, 0, largest, nan))
        if bits > 16:  # a second digit under the most populated prefix
            top = int(torch.argmax(h.cpu()))
            h2 = dispatch.call("key_histogram", DEV, scores, bits - 27, 11, top, largest, nan)
            want2 = key_histogram_ref(cpu, bits - 27, 11, top, largest, nan)
            assert torch.equal(h2.cpu(), want2) and int(want2.sum()) == int(h[top])
        key = int(order_keys_ref(cpu[0][40], nan, largest, dtype)[0])
        for budget in (0, 1, 5, 10**6):
            got = dispatch.call("threshold_masks", DEV, scores, key, budget, largest, nan)
            want = threshold_masks_ref(cpu, key, budget, largest, nan)
            assert all(torch.equal(a.cpu(), b) for a, b in zip(got, want))
    assert int(dispatch.call("first_nan", DEV, scores)) == int(first_nan_ref(cpu)) == 2
    assert int(dispatch.call("first_nan", DEV, scores[:2])) == -1
    assert triton_calls["threshold_masks"] == 8 and triton_calls["first_nan"] == 2
