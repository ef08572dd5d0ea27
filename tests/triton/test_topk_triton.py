"""The Triton histogram kernel (under TRITON_INTERPRET=1 on the CPU) against the references."""

import pytest
import torch

from sparsepai.ops.topk_ref import key_histogram_ref, topk_mask_ref
from sparsepai.triton import has_triton

pytestmark = pytest.mark.skipif(not has_triton(), reason="Triton not installed")

DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
DEV = "cuda" if torch.cuda.is_available() else "cpu"


def _scores(dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = torch.randint(-20, 21, (1500,), generator=g).to(dtype)
    a[::97] = -0.0
    b = torch.randn(30, 41, generator=g, dtype=torch.float64).to(dtype).t()  # non-contiguous
    b[3, 4] = float("nan")
    b[5, 6] = float("inf")
    return [a.to(DEV), torch.empty(0, dtype=dtype, device=DEV), b.to(DEV)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("largest", [True, False])
@pytest.mark.parametrize("nan", [1, 2])
def test_histogram_matches_ref(dtype, largest, nan):
    from sparsepai.triton.topk import key_histogram_triton

    scores = _scores(dtype)
    bits = {torch.float16: 16, torch.bfloat16: 16, torch.float32: 32, torch.float64: 64}[dtype]
    cpu = [s.cpu() for s in scores]
    for shift, width in ((bits - 16, 16), (bits - 8, 8)):
        want = key_histogram_ref(cpu, shift, width, 0, largest, nan)
        got = key_histogram_triton(scores, shift, width, 0, largest, nan).cpu()
        assert torch.equal(got, want)
        if bits > 16:
            # a second digit under the most populated prefix
            top = int(torch.argmax(want))
            want2 = key_histogram_ref(cpu, shift - 11, 11, top, largest, nan)
            got2 = key_histogram_triton(scores, shift - 11, 11, top, largest, nan).cpu()
            assert torch.equal(got2, want2) and int(want2.sum()) == int(want[top])


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
def test_topk_mask_triton_matches_ref(dtype):
    from sparsepai.triton.topk import topk_mask_triton

    scores = _scores(dtype, seed=1)
    n = sum(s.numel() for s in scores)
    for k in (0, 1, 700, n - 1, n):
        for largest in (True, False):
            thr, masks = topk_mask_triton(scores, k, largest=largest, nan="high")
            want_thr, want = topk_mask_ref([s.cpu() for s in scores], k, largest, "high")
            assert all(torch.equal(a.cpu(), b) for a, b in zip(masks, want))
            assert torch.equal(thr.cpu(), want_thr)
