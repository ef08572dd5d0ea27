"""Shared fixtures of the masked-optimizer tests: parameters, masks, gradients (NaN/inf where
pruned), and a run of ours against torch's optimizer fed with masked gradients."""

import torch

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


LAYOUTS = ("dense", "sparse")  # the forced step paths (sparsepai/optim/paths.py)


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
