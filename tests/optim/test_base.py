"""Mask and state handling of the masked optimizers (sparsepai/optim/base.py): masks given by
name or recorded by apply_masks, bad masks, state dicts to and from torch, the compact state
layout, param groups and schedulers, state reset by the user."""

import copy

import pytest
import torch

import sparsepai as sp
from sparsepai.optim import MaskedAdamW, MaskedSGD, pack_mask, unpack_mask
from tests.optim.helpers import SHAPES, grads_for, make_masks, make_params, run_pair


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
    for a, b in zip(again.state_dict()["state"].values(), sd["state"].values()):
        torch.testing.assert_close(a["exp_avg"], b["exp_avg"])  # whatever each one's layout
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


def test_pack_unpack_round_trip():
    for n in (0, 1, 63, 64, 65, 1000):
        m = torch.rand(n) < 0.5
        w = pack_mask(m)
        assert w.numel() == (n + 63) // 64 and torch.equal(unpack_mask(w, (n,)), m)
    m = torch.zeros(64, dtype=torch.bool)
    m[63] = True
    assert pack_mask(m).item() == -(2**63)


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
    ours = make(ps, masks, path="sparse")
    dense_ps = make_params()
    dense = make(dense_ps, masks, path="dense")
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
    again = make(again_ps, masks, path="sparse")
    again.load_state_dict(copy.deepcopy(theirs.state_dict()))
    for key in keys:
        assert again.state[again_ps[0]][key].shape == (int(masks[0].sum()),)
        torch.testing.assert_close(again.state[again_ps[0]][key], ours.state[ps[0]][key])
    # a state dict with other masks: the layout follows the new masks
    other_ps = [p.detach().clone().requires_grad_() for p in ps]
    other = make(other_ps, [None] * 4, path="sparse")
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
