"""The Triton masked optimizer path end to end: sp.optim.MaskedSGD / MaskedAdamW with the Triton
backend forced, against torch.optim.SGD / AdamW fed with masked gradients (the oracle: with
pruned weights and gradients at zero, torch's update leaves them at zero). Without a GPU the
kernels run on CPU tensors under TRITON_INTERPRET=1 (set by tests/conftest.py)."""

import pytest
import torch

from sparsepai.ops import dispatch
from sparsepai.optim import MaskedAdamW, MaskedSGD
from sparsepai.ops._triton import has_triton

pytestmark = pytest.mark.skipif(not has_triton(), reason="Triton not installed")
DEV = "cuda" if torch.cuda.is_available() else "cpu"
SHAPES = [(37, 29), (64,), (5, 3, 3, 3), (7,)]


@pytest.fixture
def triton_calls(monkeypatch):
    """Forces the Triton backend and counts the calls that reach the Triton step functions."""
    calls = {}
    with dispatch.use_backend("triton"):
        for op in ("masked_sgd_", "masked_adamw_"):
            real = dispatch.implementation(op, "triton")

            def spy(*args, _real=real, _op=op):
                calls[_op] = calls.get(_op, 0) + 1
                return _real(*args)

            monkeypatch.setitem(dispatch._IMPLS, dispatch.OPS[op][0], spy)
        yield calls


def _params(dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    return [torch.nn.Parameter(torch.randn(s, generator=g).to(dtype).to(DEV)) for s in SHAPES]


def _masks():
    g = torch.Generator().manual_seed(1)
    masks = [(torch.rand(s, generator=g) < 0.3).to(DEV) for s in SHAPES]
    masks[1][:] = True  # fully kept
    masks[3] = None  # unmasked
    return masks


def _run(make_ours, make_torch, steps, dtype=torch.float32):
    masks = _masks()
    ours_p, ref_p = _params(dtype), _params(dtype)
    with torch.no_grad():
        for q, m in zip(ref_p, masks):
            if m is not None:
                q.masked_fill_(~m, 0)
    ours, theirs = make_ours(ours_p, masks), make_torch(ref_p)
    g = torch.Generator().manual_seed(2)
    for _ in range(steps):
        grads = [torch.randn(s, generator=g).to(dtype).to(DEV) for s in SHAPES]
        for p, q, gr, m in zip(ours_p, ref_p, grads, masks):
            if m is None:
                p.grad, q.grad = gr.clone(), gr.clone()
            else:  # NaN at pruned positions must never be read
                p.grad = torch.where(m, gr, torch.full_like(gr, float("nan")))
                q.grad = torch.where(m, gr, torch.zeros_like(gr))
        ours.step()
        theirs.step()
    for p, m in zip(ours_p, masks):
        if m is not None:
            assert bool((p[~m] == 0).all())
    return ours, theirs, ours_p, ref_p


@pytest.mark.parametrize("opts", [dict(momentum=0.0, weight_decay=0.0),
                                  dict(momentum=0.9, dampening=0.1, weight_decay=1e-2),
                                  dict(momentum=0.9, nesterov=True, maximize=True)],
                         ids=["plain", "momentum", "nesterov-maximize"])
def test_masked_sgd(triton_calls, opts):
    steps = 4
    ours, theirs, ps, qs = _run(lambda p, m: MaskedSGD(p, m, lr=0.05, **opts),
                                lambda p: torch.optim.SGD(p, lr=0.05, **opts), steps)
    for p, q in zip(ps, qs):
        torch.testing.assert_close(p.detach(), q.detach(), rtol=1e-5, atol=1e-6)
    if opts["momentum"]:
        for i in range(len(ps)):  # dense state (Triton takes no compact state)
            b = ours.state[ps[i]]["momentum_buffer"]
            assert b.shape == ps[i].shape
            torch.testing.assert_close(b, theirs.state[qs[i]]["momentum_buffer"], rtol=1e-5,
                                       atol=1e-6)
    assert triton_calls == {"masked_sgd_": steps}


@pytest.mark.parametrize("amsgrad", [False, True])
def test_masked_adamw(triton_calls, amsgrad):
    steps = 4
    ours, theirs, ps, qs = _run(
        lambda p, m: MaskedAdamW(p, m, lr=1e-2, weight_decay=1e-2, amsgrad=amsgrad),
        lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=1e-2, amsgrad=amsgrad), steps)
    for p, q in zip(ps, qs):
        torch.testing.assert_close(p.detach(), q.detach(), rtol=1e-5, atol=1e-6)
    for key in ("exp_avg", "exp_avg_sq") + (("max_exp_avg_sq",) if amsgrad else ()):
        for p, q in zip(ps, qs):
            torch.testing.assert_close(ours.state[p][key], theirs.state[q][key], rtol=1e-5,
                                       atol=1e-6)
    assert triton_calls == {"masked_adamw_": steps}


def test_bfloat16_params_one_step(triton_calls):
    # one step against torch's float32 math rounded once to bfloat16 (the interpreter's
    # float->bf16 conversion need not round like torch's: a bf16 ulp of tolerance)
    ours, theirs, ps, qs = _run(lambda p, m: MaskedSGD(p, m, lr=0.05, momentum=0.9),
                                lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9), 1,
                                dtype=torch.bfloat16)
    for p, q in zip(ps, qs):
        torch.testing.assert_close(p.detach().float(), q.detach().float(), rtol=8e-3, atol=1e-3)
    assert triton_calls == {"masked_sgd_": 1}


def test_float64_params_are_refused_under_forced_triton(triton_calls):
    p = torch.nn.Parameter(torch.randn(4, 4, dtype=torch.float64, device=DEV))
    opt = MaskedSGD([p], [torch.rand(4, 4, device=DEV) < 0.5], lr=0.1)
    p.grad = torch.randn_like(p)
    with pytest.raises(RuntimeError, match=r"SPARSEPAI_BACKEND=triton.*torch.float64"):
        opt.step()
