"""The masked optimizer ops, ``masked_sgd_`` and ``masked_adamw_`` (the ``masked_optim`` family:
face sparsepai/ops/masked_optim.py, reference masked_optim_ref.py, Triton kernels
masked_optim_triton.py, C++ kernels csrc/cpu/masked_optim.cpp and csrc/cuda/masked_optim.cu),
against their reference on shared sample inputs; opcheck of the schemas. Every test runs on the
grid of tests/ops/grid.py (each available backend forced). The optimizers built on them:
tests/optim."""

import itertools

import pytest
import torch

from sparsepai._ext import has_extension
from sparsepai.ops import masked_optim
from sparsepai.ops import masked_optim_ref as ref
from sparsepai.ops.bits import pack_mask

OPS = ("masked_sgd_", "masked_adamw_")
needs_ext = pytest.mark.skipif(not has_extension(), reason="compiled extension not built")

SHAPES_DENSITIES = [((70,), 0.5), ((3, 5), None), ((128, 33), 0.04), ((4, 3, 3, 3), 0.3)]
SGD_OPTIONS = [dict(momentum=m, dampening=d, weight_decay=wd, nesterov=n, maximize=mx)
               for m, d, wd, n, mx in itertools.product([0.0, 0.9], [0.0, 0.1], [0.0, 1e-2],
                                                        [False, True], [False, True])
               if not (n and (m == 0 or d != 0))]
ADAMW_OPTIONS = [dict(weight_decay=wd, amsgrad=a, maximize=mx)
                 for wd, a, mx in itertools.product([0.0, 1e-2], [False, True], [False, True])]


def sample_inputs(device, dtype=torch.float32, seed=0):
    """Parameters, gradients and bit-packed masks (an empty word tensor: unmasked), one list per
    argument, with the keep-masks."""
    g = torch.Generator().manual_seed(seed)
    params, grads, words, keeps = [], [], [], []
    for shape, density in SHAPES_DENSITIES:
        keep = (torch.rand(shape, generator=g) < density if density is not None
                else torch.ones(shape, dtype=torch.bool))
        params.append((torch.randn(shape, generator=g) * keep).to(device, dtype))
        grads.append(torch.randn(shape, generator=g).to(device, dtype))
        words.append(pack_mask(keep).to(device) if density is not None
                     else torch.empty(0, dtype=torch.int64, device=device))
        keeps.append(keep.to(device))
    return params, grads, words, keeps


def _clone(ts):
    return [t.clone() for t in ts]


def _assert_same(got, want, keeps):
    for a, b, keep in zip(got, want, keeps):
        torch.testing.assert_close(a, b)
        assert bool((a[~keep] == 0).all())


@pytest.mark.parametrize("opts", SGD_OPTIONS, ids=lambda o: "-".join(f"{k}={v}" for k, v in
                                                                     o.items()))
def test_masked_sgd_matches_reference(device, opts):
    params, grads, words, keeps = sample_inputs(device)
    bufs = [torch.zeros_like(p) for p in params] if opts["momentum"] else []
    mine, theirs = (_clone(params), _clone(bufs)), (_clone(params), _clone(bufs))
    for step in range(3):  # the first step fills the momentum buffers, the others use them
        gs = [g * (step + 1) for g in grads]
        args = (opts["momentum"], opts["dampening"], opts["weight_decay"], opts["nesterov"],
                opts["maximize"], step == 0)
        masked_optim.masked_sgd_(mine[0], gs, mine[1], words, 0.1, *args)
        ref.masked_sgd_ref(theirs[0], gs, theirs[1], words, 0.1, *args)
    _assert_same(mine[0], theirs[0], keeps)
    _assert_same(mine[1], theirs[1], keeps)


@pytest.mark.parametrize("opts", ADAMW_OPTIONS, ids=lambda o: "-".join(f"{k}={v}" for k, v in
                                                                       o.items()))
def test_masked_adamw_matches_reference(device, opts):
    params, grads, words, keeps = sample_inputs(device)
    zeros = [torch.zeros_like(p) for p in params]
    state = lambda: (_clone(params), _clone(zeros), _clone(zeros),  # noqa: E731
                     _clone(zeros) if opts["amsgrad"] else [])
    mine, theirs = state(), state()
    for step in range(1, 4):
        gs = [g * step for g in grads]
        args = ([float(step)] * len(params), 1e-3, 0.9, 0.999, opts["weight_decay"], 1e-8,
                opts["amsgrad"], opts["maximize"])
        masked_optim.masked_adamw_(mine[0], gs, mine[1], mine[2], mine[3], words, *args)
        ref.masked_adamw_ref(theirs[0], gs, theirs[1], theirs[2], theirs[3], words, *args)
    for a, b in zip(mine, theirs):
        _assert_same(a, b, keeps)


@needs_ext
def test_opcheck_masked_ops(device):
    ps = [torch.randn(70, device=device), torch.randn(3, 5, device=device)]
    gs = [torch.randn(70, device=device), torch.randn(3, 5, device=device)]
    ws = [pack_mask(torch.rand(70) < 0.5).to(device),
          torch.empty(0, dtype=torch.int64, device=device)]
    zeros = lambda: [torch.zeros(70, device=device), torch.zeros(3, 5, device=device)]  # noqa: E731
    torch.library.opcheck(torch.ops.sparsepai.masked_sgd_.default,
                          (ps, gs, zeros(), ws, 0.1, 0.9, 0.0, 0.0, False, False, True))
    torch.library.opcheck(torch.ops.sparsepai.masked_adamw_.default,
                          (ps, gs, zeros(), zeros(), [], ws, [1.0, 1.0], 1e-3, 0.9, 0.999, 1e-2,
                           1e-8, False, False))


@needs_ext
def test_ops_with_compact_state(backend):
    if backend != "cpu":
        pytest.skip("compact state (the kept entries only) is read by the C++ CPU kernels")
    keep = torch.rand(200) < 0.1
    k = int(keep.sum())
    ps = [torch.randn(200) * keep]
    gs = [torch.randn(200)]
    ws = [pack_mask(keep)]
    torch.library.opcheck(torch.ops.sparsepai.masked_sgd_.default,
                          (ps, gs, [torch.randn(k)], ws, 0.1, 0.9, 0.0, 0.0, False, False, False))
    torch.library.opcheck(torch.ops.sparsepai.masked_adamw_.default,
                          (ps, gs, [torch.randn(k)], [torch.rand(k)], [], ws, [2.0], 1e-3, 0.9,
                           0.999, 1e-2, 1e-8, False, False))
    # the op against the reference, compact state in both
    b1 = [torch.randn(k)]
    b2 = [b1[0].clone()]
    p1, p2 = [ps[0].clone()], [ps[0].clone()]
    torch.ops.sparsepai.masked_sgd_(p1, gs, b1, ws, 0.1, 0.9, 0.1, 1e-2, False, False, False)
    ref.masked_sgd_ref(p2, gs, b2, ws, 0.1, 0.9, 0.1, 1e-2, False, False, False)
    assert torch.equal(p1[0], p2[0]) and torch.equal(b1[0], b2[0])
    with pytest.raises(ValueError, match=r"masked_sgd_: momentum_buffers\[0\] is compact with"):
        torch.ops.sparsepai.masked_sgd_(p1, gs, [torch.zeros(k + 1)], ws, 0.1, 0.9, 0.0, 0.0,
                                        False, False, False)
    with pytest.raises(ValueError, match="mix compact and dense"):
        torch.ops.sparsepai.masked_adamw_(p1, gs, [torch.zeros(k)], [torch.zeros(200)], [], ws,
                                          [1.0], 1e-3, 0.9, 0.999, 0.0, 1e-8, False, False)
