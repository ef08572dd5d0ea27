"""MaskedSGD / MaskedAdamW against torch.optim.SGD / AdamW fed with masked gradients (the oracle:
with pruned weights and gradients at zero, torch's update leaves them at zero), over every option
combination and both step paths, 200 steps; the ops against their reference."""

import itertools

import pytest
import torch

import sparsepai as sp
from sparsepai.ops import masked_optim_ref as ref
from sparsepai.optim import MaskedAdamW, MaskedSGD, pack_mask
from tests.optim.helpers import (LAYOUTS, SHAPES, dense_state, grads_for, make_masks, make_params,
                                 run_pair)


SGD_OPTIONS = [
    dict(momentum=m, dampening=d, weight_decay=wd, nesterov=n, maximize=mx)
    for m, d, wd, n, mx in itertools.product([0.0, 0.9], [0.0, 0.1], [0.0, 1e-2], [False, True],
                                             [False, True])
    if not (n and (m == 0 or d != 0))
]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("density", [0.3, 0.04])  # dense-then-zero words / one-by-one words
@pytest.mark.parametrize("opts", SGD_OPTIONS, ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()))
def test_sgd_matches_torch(opts, density, layout):
    masks = make_masks(density=density)
    ours, theirs, ps, qs = run_pair(
        lambda ps, ms: MaskedSGD(ps, ms, lr=0.01, path=layout, **opts),
        lambda qs: torch.optim.SGD(qs, lr=0.01, **opts),
        masks,
    )
    for p, q in zip(ps, qs):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    if opts["momentum"]:
        for i, (p, q, m) in enumerate(zip(ps, qs, masks)):
            b = dense_state(ours, i, "momentum_buffer")
            torch.testing.assert_close(b, theirs.state[q]["momentum_buffer"], rtol=1e-5, atol=1e-6)
            if m is not None:
                assert bool((b[~m] == 0).all())


ADAMW_OPTIONS = [
    dict(weight_decay=wd, amsgrad=a, maximize=mx)
    for wd, a, mx in itertools.product([0.0, 1e-2], [False, True], [False, True])
]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("density", [0.3, 0.04])
@pytest.mark.parametrize("opts", ADAMW_OPTIONS, ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()))
def test_adamw_matches_torch(opts, density, layout):
    masks = make_masks(density=density)
    ours, theirs, ps, qs = run_pair(
        lambda ps, ms: MaskedAdamW(ps, ms, lr=1e-2, path=layout, **opts),
        lambda qs: torch.optim.AdamW(qs, lr=1e-2, **opts),
        masks,
    )
    for p, q in zip(ps, qs):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    for i, (p, q, m) in enumerate(zip(ps, qs, masks)):
        for key in ("exp_avg", "exp_avg_sq") + (("max_exp_avg_sq",) if opts["amsgrad"] else ()):
            t = dense_state(ours, i, key)
            torch.testing.assert_close(t, theirs.state[q][key], rtol=1e-5, atol=1e-6)
            if m is not None:
                assert bool((t[~m] == 0).all())
        assert ours.state[p]["step"].item() == theirs.state[q]["step"].item() == 200


@pytest.mark.parametrize("cls", ["sgd", "adamw"])
def test_matches_torch_on_each_device(device, cls):
    # the backend the dispatch table chooses for the device (C++ CUDA, or Triton in a CPU-only
    # build, on a GPU), against torch's optimizer on the same device
    masks = make_masks(density=0.3)
    if cls == "sgd":
        opts = dict(momentum=0.9, weight_decay=1e-2, nesterov=True)
        make = (lambda ps, ms: MaskedSGD(ps, ms, lr=0.01, **opts),
                lambda qs: torch.optim.SGD(qs, lr=0.01, **opts))
    else:
        opts = dict(weight_decay=1e-2, amsgrad=True)
        make = (lambda ps, ms: MaskedAdamW(ps, ms, lr=1e-2, **opts),
                lambda qs: torch.optim.AdamW(qs, lr=1e-2, **opts))
    ours, theirs, ps, qs = run_pair(*make, masks, steps=50, device=device)
    for p, q in zip(ps, qs):
        assert p.device.type == device
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_all_kept_mask_matches_unmasked_torch_closely():
    ones = [torch.ones(s, dtype=torch.bool) for s in SHAPES]
    ours, theirs, ps, qs = run_pair(
        lambda ps, ms: MaskedSGD(ps, ms, lr=0.05, momentum=0.9, weight_decay=1e-3),
        lambda qs: torch.optim.SGD(qs, lr=0.05, momentum=0.9, weight_decay=1e-3, fused=True),
        ones,
    )
    # torch's fused kernel uses FMAs; ours rounds like torch's default (for-loop/foreach) SGD,
    # so after 200 steps the two differ by accumulated float32 rounding only
    for p, q in zip(ps, qs):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("cls", ["sgd", "adamw"])
def test_half_precision_params_use_float32_math(dtype, cls):
    masks = make_masks()
    ps = make_params(dtype=dtype)
    qs = [p.detach().clone() for p in ps]
    words = [pack_mask(m) if m is not None else torch.empty(0, dtype=torch.int64) for m in masks]
    if cls == "sgd":
        opt = MaskedSGD(ps, masks, lr=0.01, momentum=0.9)
        bufs = [torch.zeros_like(q) for q in qs]
    else:
        opt = MaskedAdamW(ps, masks, lr=1e-2)
        m1 = [torch.zeros_like(q) for q in qs]
        m2 = [torch.zeros_like(q) for q in qs]
    with torch.no_grad():
        for q, m in zip(qs, masks):
            if m is not None:
                q.masked_fill_(~m, 0)
    for s in range(20):
        gs = grads_for(s, ps)
        for p, g in zip(ps, gs):
            p.grad = g
        opt.step()
        if cls == "sgd":
            ref.masked_sgd_ref(qs, gs, bufs, words, 0.01, 0.9, 0.0, 0.0, False, False, s == 0)
        else:
            ref.masked_adamw_ref(qs, gs, m1, m2, [], words, [float(s + 1)] * len(qs), 1e-2, 0.9,
                                 0.999, 1e-2, 1e-8, False, False)
    for p, q in zip(ps, qs):
        assert p.dtype == dtype
        # one rounding to the storage dtype apart at most per step
        torch.testing.assert_close(p.float(), q.float(), rtol=2e-2, atol=2e-2)


def test_grad_scaler_skips_inf_steps():
    model = torch.nn.Linear(4, 2)
    masks = {"weight": torch.tensor([[True, False, True, False]] * 2)}
    sp.apply_masks(model, masks)
    opt = MaskedSGD(model.named_parameters(), None, lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    x = torch.randn(8, 4)
    loss = model(x).pow(2).mean()
    scaler.scale(loss).backward()
    before = model.weight.detach().clone()
    scaler.step(opt)
    scaler.update()
    assert not torch.equal(model.weight, before) and bool((model.weight[~masks["weight"]] == 0).all())
    opt.zero_grad()
    scaler.scale(model(x).pow(2).mean()).backward()
    model.weight.grad[0, 0] = float("inf")
    before = model.weight.detach().clone()
    scaler.step(opt)  # found inf: skipped
    scaler.update()
    assert torch.equal(model.weight, before)


def test_float64_params_use_float64_math():
    masks = make_masks()
    ours, theirs, ps, qs = run_pair(
        lambda ps, ms: MaskedSGD(ps, ms, lr=0.01, momentum=0.9, weight_decay=1e-3),
        lambda qs: torch.optim.SGD(qs, lr=0.01, momentum=0.9, weight_decay=1e-3),
        masks, steps=50, dtype=torch.float64,
    )
    for p, q in zip(ps, qs):
        assert p.dtype == torch.float64
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-13)
