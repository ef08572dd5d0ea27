"""The Triton masked optimizer kernels (TRITON_INTERPRET=1 on the CPU) against the references."""

import pytest
import torch

from sparsepai.ops import masked_optim_ref as ref
from sparsepai.optim import pack_mask
from sparsepai.triton import has_triton

pytestmark = pytest.mark.skipif(not has_triton(), reason="Triton not installed")
DEV = "cuda" if torch.cuda.is_available() else "cpu"


def _setup(dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    shapes = [(37, 29), (64,), (5,)]
    ps = [torch.randn(s, generator=g).to(dtype) for s in shapes]
    keeps = [torch.rand(s, generator=g) < 0.4 for s in shapes]
    keeps[2] = None
    for p, k in zip(ps, keeps):
        if k is not None:
            p.masked_fill_(~k, 0)
    words = [pack_mask(k) if k is not None else torch.empty(0, dtype=torch.int64) for k in keeps]
    return [p.to(DEV) for p in ps], [w.to(DEV) for w in words], keeps, g


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("nesterov", [False, True])
def test_masked_sgd_triton_matches_ref(dtype, nesterov):
    from sparsepai.triton.masked_optim import masked_sgd_triton

    ps, ws, keeps, g = _setup(dtype)
    qs = [p.clone() for p in ps]
    b1 = [torch.zeros_like(p) for p in ps]
    b2 = [torch.zeros_like(p) for p in ps]
    # bfloat16: one step, compared to one bf16 rounding (the interpreter's float->bf16 conversion
    # need not round like torch's); float32: four steps, to float32 rounding
    steps, tol = (4, dict(rtol=1e-5, atol=1e-6)) if dtype == torch.float32 else (
        1, dict(rtol=8e-3, atol=1e-3))
    for step in range(steps):
        gs = [torch.randn(p.shape, generator=g).to(dtype).to(DEV) for p in ps]
        gs[0].view(-1)[~keeps[0].view(-1).to(DEV)] = float("nan")  # pruned: never read
        args = (0.05, 0.9, 0.0, 1e-2, nesterov, step % 2 == 1, step == 0)
        masked_sgd_triton(ps, gs, b1, ws, *args)
        ref.masked_sgd_ref(qs, gs, b2, ws, *args)
    for a, b in zip(ps + b1, qs + b2):
        torch.testing.assert_close(a.float().cpu(), b.float().cpu(), **tol)
    assert bool((ps[0].cpu()[~keeps[0]] == 0).all())


@pytest.mark.parametrize("amsgrad", [False, True])
def test_masked_adamw_triton_matches_ref(amsgrad):
    from sparsepai.triton.masked_optim import masked_adamw_triton

    ps, ws, keeps, g = _setup(torch.float32, seed=1)
    qs = [p.clone() for p in ps]
    st1 = [[torch.zeros_like(p) for p in ps] for _ in range(3)]
    st2 = [[torch.zeros_like(p) for p in ps] for _ in range(3)]
    for step in range(4):
        gs = [torch.randn(p.shape, generator=g).to(DEV) for p in ps]
        args = ([float(step + 1)] * len(ps), 1e-2, 0.9, 0.999, 1e-2, 1e-8, amsgrad, False)
        masked_adamw_triton(ps, gs, st1[0], st1[1], st1[2] if amsgrad else [], ws, *args)
        ref.masked_adamw_ref(qs, gs, st2[0], st2[1], st2[2] if amsgrad else [], ws, *args)
    for a, b in zip(ps + st1[0] + st1[1], qs + st2[0] + st2[1]):
        torch.testing.assert_close(a.cpu(), b.cpu(), rtol=1e-5, atol=1e-6)
