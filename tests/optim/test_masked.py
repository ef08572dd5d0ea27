"""MaskedSGD / MaskedAdamW against torch.optim.SGD / AdamW fed with masked gradients (the oracle:
with pruned weights and gradients at zero, torch's update leaves them at zero), over every option
combination, 200 steps."""

import copy
import itertools

import pytest
import torch

import sparsepai as sp
from sparsepai._ext import has_extension
from sparsepai.ops import masked_optim_ref as ref
from sparsepai.optim import MaskedAdamW, MaskedSGD, pack_mask, unpack_mask

SHAPES = [(33, 17), (64,), (5, 3, 3, 3), (7,)]


def make_params(seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(s, generator=g).to(dtype)) for s in SHAPES]


def make_masks(seed=1, density=0.3):
    g = torch.Generator().manual_seed(seed)
    masks = [torch.rand(s, generator=g) < density for s in SHAPES]
    masks[1][:] = True  # a fully kept tensor
    masks[3] = None  # an unmasked tensor
    return masks


def grads_for(step, params, poison=None):
    g = torch.Generator().manual_seed(1000 + step)
    out = [torch.randn(p.shape, generator=g).to(p.dtype) for p in params]
    if poison is not None:  # NaN/inf where pruned: must not leak into anything
        for t, m in zip(out, poison):
            if m is not None:
                bad = torch.full_like(t, float("nan"))
                bad.view(-1)[::3] = float("inf")
                t.copy_(torch.where(m.cpu(), t, bad))
    return out


def dense_state(opt, i, key):
    """State ``key`` of the i-th parameter in torch's layout (compact state expanded)."""
    return opt.state_dict()["state"][i][key]


LAYOUTS = {"dense": 0.0, "compact": 1.0}  # compact_density: which state layout masked tensors get


def run_pair(make_ours, make_torch, masks, steps=200, dtype=torch.float32, device="cpu"):
    ours_p = [torch.nn.Parameter(p.detach().to(device)) for p in make_params(dtype=dtype)]
    ref_p = [torch.nn.Parameter(p.detach().to(device)) for p in make_params(dtype=dtype)]
    masks = [None if m is None else m.to(device) for m in masks]
    with torch.no_grad():
        for p, q, m in zip(ours_p, ref_p, masks):
            if m is not None:
                q.masked_fill_(~m, 0)
    ours = make_ours(ours_p, masks)
    theirs = make_torch(ref_p)
    for s in range(steps):
        for p, g in zip(ours_p, grads_for(s, ours_p, poison=masks)):
            p.grad = g.to(device)
        for q, g, m in zip(ref_p, grads_for(s, ref_p), masks):
            g = g.to(device)
            q.grad = g if m is None else torch.where(m, g, torch.zeros_like(g))
        ours.step()
        theirs.step()
        for p, m in zip(ours_p, masks):
            if m is not None:
                assert bool((p[~m] == 0).all()), f"pruned entries moved at step {s}"
    return ours, theirs, ours_p, ref_p


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
        lambda ps, ms: MaskedSGD(ps, ms, lr=0.01, compact_density=LAYOUTS[layout], **opts),
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
        lambda ps, ms: MaskedAdamW(ps, ms, lr=1e-2, compact_density=LAYOUTS[layout], **opts),
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


def test_state_dict_round_trips_with_torch():
    masks = make_masks()
    ps = make_params()
    ours = MaskedAdamW(ps, masks, lr=1e-2)
    for s in range(3):
        for p, g in zip(ps, grads_for(s, ps)):
            p.grad = g
        ours.step()
    sd = ours.state_dict()
    assert set(sd["masks"]) == {0, 1, 2, 3} and sd["masks"][3] is None
    # ours -> torch: loads and steps like ours does on kept entries
    qs = [p.detach().clone().requires_grad_() for p in ps]
    theirs = torch.optim.AdamW(qs, lr=1e-2)
    theirs.load_state_dict(sd)
    assert theirs.state[qs[0]]["step"].item() == 3
    # torch -> ours: a fresh masked optimizer picks up torch's state, keeps its own masks
    again = MaskedAdamW([p.detach().clone().requires_grad_() for p in ps], masks, lr=1e-2)
    again.load_state_dict(theirs.state_dict())
    for a, b in zip(again.state.values(), ours.state.values()):
        torch.testing.assert_close(a["exp_avg"], b["exp_avg"])
    # ours -> ours restores the masks
    other = MaskedAdamW([p.detach().clone().requires_grad_() for p in ps], [None] * 4, lr=1e-2)
    other.load_state_dict(sd)
    for a, b in zip(other.masks(), masks):
        assert (a is None and b is None) or torch.equal(a, b)


def test_state_dict_from_a_different_model_is_rejected_whole():
    ps = make_params()
    opt = MaskedSGD(ps, make_masks(), lr=0.1, momentum=0.9)
    for p, g in zip(ps, grads_for(0, ps)):
        p.grad = g
    opt.step()
    before = {k: v["momentum_buffer"].clone() for k, v in opt.state.items()}
    wrong = [torch.nn.Parameter(torch.randn(3, 3)) for _ in SHAPES]
    other = torch.optim.SGD(wrong, lr=0.1, momentum=0.9)
    for w in wrong:
        w.grad = torch.randn(3, 3)
    other.step()
    with pytest.raises(ValueError, match="different model"):
        opt.load_state_dict(other.state_dict())
    for k, v in opt.state.items():
        assert torch.equal(v["momentum_buffer"], before[k])
    with pytest.raises(ValueError, match="different model"):
        opt.load_state_dict(torch.optim.SGD(ps[:2], lr=0.1).state_dict())


def test_bad_masks_name_the_parameter():
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    with pytest.raises(ValueError, match=r"'0.weight' has shape"):
        MaskedSGD(model.named_parameters(), {"0.weight": torch.ones(4, 3, dtype=torch.bool)}, lr=0.1)
    with pytest.raises(TypeError, match=r"'1.weight' must be a bool"):
        MaskedSGD(model.named_parameters(), {"1.weight": torch.ones(2, 3)}, lr=0.1)
    with pytest.raises(ValueError, match="does not have"):
        MaskedSGD(model.named_parameters(), {"2.weight": torch.ones(2, 3, dtype=torch.bool)}, lr=0.1)
    with pytest.raises(ValueError, match="is on meta"):
        MaskedSGD(model.named_parameters(),
                  {"1.weight": torch.ones(2, 3, dtype=torch.bool, device="meta")}, lr=0.1)
    with pytest.raises(ValueError, match="got 1 masks for 4"):
        MaskedSGD(model.parameters(), [None], lr=0.1)
    with pytest.raises(TypeError, match="complex"):
        MaskedSGD([torch.nn.Parameter(torch.randn(3, dtype=torch.complex64))], [None], lr=0.1)
    emb = torch.nn.Embedding(10, 3, sparse=True)
    opt = MaskedSGD(emb.named_parameters(), None, lr=0.1)
    emb(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(RuntimeError, match="'weight' has a sparse gradient"):
        opt.step()


def test_apply_masks_then_train_without_hooks():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    masks = {n: torch.rand(p.shape) < 0.2 for n, p in model.named_parameters() if p.dim() > 1}
    sp.apply_masks(model, masks)
    opt = MaskedSGD(model.named_parameters(), None, lr=0.1, momentum=0.9, weight_decay=1e-4)
    x, y = torch.randn(64, 8), torch.randint(0, 3, (64,))
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    params = dict(model.named_parameters())
    for n, m in masks.items():
        assert bool((params[n][~m] == 0).all())
    assert losses[-1] < losses[0]


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


def test_pack_unpack_round_trip():
    for n in (0, 1, 63, 64, 65, 1000):
        m = torch.rand(n) < 0.5
        w = pack_mask(m)
        assert w.numel() == (n + 63) // 64 and torch.equal(unpack_mask(w, (n,)), m)
    m = torch.zeros(64, dtype=torch.bool)
    m[63] = True
    assert pack_mask(m).item() == -(2**63)


@pytest.mark.skipif(not has_extension(), reason="compiled extension not built")
def test_opcheck_masked_ops():
    ps = [torch.randn(70), torch.randn(3, 5)]
    gs = [torch.randn(70), torch.randn(3, 5)]
    ws = [pack_mask(torch.rand(70) < 0.5), torch.empty(0, dtype=torch.int64)]
    bufs = [torch.zeros(70), torch.zeros(3, 5)]
    torch.library.opcheck(torch.ops.sparsepai.masked_sgd_.default,
                          (ps, gs, bufs, ws, 0.1, 0.9, 0.0, 0.0, False, False, True))
    m = [torch.zeros(70), torch.zeros(3, 5)]
    v = [torch.zeros(70), torch.zeros(3, 5)]
    torch.library.opcheck(torch.ops.sparsepai.masked_adamw_.default,
                          (ps, gs, m, v, [], ws, [1.0, 1.0], 1e-3, 0.9, 0.999, 1e-2, 1e-8, False,
                           False))


def test_scheduler_and_add_param_group():
    ps = make_params()
    masks = make_masks()
    opt = MaskedSGD(ps[:2], masks[:2], lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    extra = ps[2]
    extra_mask = masks[2]
    extra._sparsepai_mask = extra_mask  # as sp.apply_masks records it
    opt.add_param_group({"params": [extra], "lr": 0.2})
    assert bool((extra[~extra_mask] == 0).all())  # zeroed when the optimizer took it
    before = [p.detach().clone() for p in ps[:3]]
    for p in ps[:3]:
        p.grad = torch.ones_like(p)
    opt.step()
    sched.step()
    # plain SGD: p -= lr * 1 on kept entries, with the group's lr at that step
    assert torch.allclose(ps[1], before[1] - 0.1)
    kept = extra_mask
    assert torch.allclose(ps[2][kept], before[2][kept] - 0.2)
    assert opt.param_groups[0]["lr"] == 0.05
    opt.zero_grad()
    assert all(p.grad is None for p in ps[:3])


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


@pytest.mark.parametrize("cls", ["sgd", "adamw"])
def test_compact_state_layout_and_round_trips(cls):
    """Very sparse CPU tensors keep 1-D state of their kept entries; state_dict is torch's dense
    layout either way, and loading (from torch or from ours) goes back to the compact layout."""
    masks = make_masks(density=0.05)
    ps = make_params()
    if cls == "sgd":
        make = lambda qs, ms, **kw: MaskedSGD(qs, ms, lr=0.01, momentum=0.9, **kw)  # noqa: E731
        keys, torch_cls = ("momentum_buffer",), lambda qs: torch.optim.SGD(qs, lr=0.01, momentum=0.9)
    else:
        make = lambda qs, ms, **kw: MaskedAdamW(qs, ms, lr=1e-2, amsgrad=True, **kw)  # noqa: E731
        keys = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")
        torch_cls = lambda qs: torch.optim.AdamW(qs, lr=1e-2, amsgrad=True)  # noqa: E731
    ours = make(ps, masks)  # default compact_density
    dense_ps = make_params()
    dense = make(dense_ps, masks, compact_density=0.0)
    for s in range(5):
        for p, q, g in zip(ps, dense_ps, grads_for(s, ps, poison=masks)):
            p.grad, q.grad = g, g.clone()
        ours.step()
        dense.step()
    for i, (p, m) in enumerate(zip(ps, masks)):
        for key in keys:
            t = ours.state[p][key]
            if m is not None and not bool(m.all()):  # compact: the kept entries in index order
                assert t.shape == (int(m.sum()),)
                torch.testing.assert_close(t, dense.state[dense_ps[i]][key][m], rtol=0, atol=0)
            else:
                assert t.shape == p.shape
    for p, q in zip(ps, dense_ps):
        assert torch.equal(p, q)  # bit for bit: the same per-element math
    sd = ours.state_dict()
    sd_dense = dense.state_dict()
    for i in range(len(ps)):
        for key in keys:
            assert torch.equal(sd["state"][i][key], sd_dense["state"][i][key])
            assert ours.state[ps[i]][key].dim() == 1 or i in (1, 3)  # state_dict copied, not ours
    # ours -> torch -> ours: torch continues from our state; ours goes back to compact
    qs = [p.detach().clone().requires_grad_() for p in ps]
    theirs = torch_cls(qs)
    theirs.load_state_dict(copy.deepcopy(sd))  # torch's load shares tensors: no aliasing
    again_ps = [p.detach().clone().requires_grad_() for p in ps]
    again = make(again_ps, masks)
    again.load_state_dict(copy.deepcopy(theirs.state_dict()))
    for key in keys:
        assert again.state[again_ps[0]][key].shape == (int(masks[0].sum()),)
        torch.testing.assert_close(again.state[again_ps[0]][key], ours.state[ps[0]][key])
    # a state dict with other masks: the layout follows the new masks
    other_ps = [p.detach().clone().requires_grad_() for p in ps]
    other = make(other_ps, [None] * 4)
    other.load_state_dict(sd)
    assert other.state[other_ps[0]][keys[0]].shape == (int(masks[0].sum()),)
    for s in range(5, 8):
        for p, a, g in zip(ps, again_ps, grads_for(s, ps, poison=masks)):
            p.grad, a.grad = g, g.clone()
        ours.step()
        again.step()
    for p, a in zip(ps, again_ps):
        assert torch.equal(p, a)


def test_compact_density_is_checked():
    with pytest.raises(ValueError, match="compact_density"):
        MaskedSGD(make_params(), make_masks(), lr=0.1, compact_density=1.5)


@pytest.mark.skipif(not has_extension(), reason="compiled extension not built")
def test_ops_with_compact_state():
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
    b1, b2 = [torch.randn(k)], None
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


@pytest.mark.parametrize("cls", ["sgd", "adamw"])
def test_state_reset_by_the_user_is_honoured(cls):
    """Resetting ``optimizer.state`` (a common way to drop momentum) restarts the state like
    torch does, although the optimizer caches its per-group call lists."""
    from collections import defaultdict

    masks = make_masks(density=0.05)
    if cls == "sgd":
        make_ours = lambda ps, ms: MaskedSGD(ps, ms, lr=0.01, momentum=0.9)  # noqa: E731
        make_torch = lambda qs: torch.optim.SGD(qs, lr=0.01, momentum=0.9)  # noqa: E731
    else:
        make_ours = lambda ps, ms: MaskedAdamW(ps, ms, lr=1e-2)  # noqa: E731
        make_torch = lambda qs: torch.optim.AdamW(qs, lr=1e-2)  # noqa: E731
    ours, theirs, ps, qs = run_pair(make_ours, make_torch, masks, steps=5)
    ours.state = defaultdict(dict)
    theirs.state = defaultdict(dict)
    for s in range(5, 10):
        for p, q, g, m in zip(ps, qs, grads_for(s, ps), masks):
            p.grad = g
            q.grad = g if m is None else torch.where(m, g, torch.zeros_like(g))
        ours.step()
        theirs.step()
    for p, q in zip(ps, qs):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
