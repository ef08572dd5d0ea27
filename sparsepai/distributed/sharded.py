"""FSDP2-sharded models (``fully_shard``, ``DTensor`` parameters) under ``group=``.

Each rank scores only its own shards (``DTensor.to_local()``): gradients come from FSDP's own
forward/backward (its all-gathers, and its reduce-scatter, which averages the ranks' gradients
as for training), so a rank never holds more than FSDP already gives it. Thresholding is one
global ``sp.topk_mask(..., group=)`` over the local shards, so exactly ``N - round(s N)``
weights are kept over the whole model; ties at the threshold are kept in rank order (then
parameter order, then flat index), which differs from one process's tensor order only for
exactly equal scores. Scores and masks are ``DTensor``s placed like their parameters.

Methods: ``magnitude``, ``snip``, ``force`` and first-order ``prospr``. The full ProsPr
meta-gradient would differentiate through FSDP's all-gathers, which FSDP2's sharded parameters
do not support (they are not in the autograd graph of the forward); it raises a clear error.
The user's model is used in place (FSDP modules cannot be deep-copied) and restored: weights,
buffers, gradients, ``requires_grad`` and train/eval mode are as they were afterwards.
"""

from __future__ import annotations

import contextlib
import warnings

import torch

from sparsepai.distributed._comm import comm_device

SHARDED_METHODS = ("magnitude", "snip", "force", "prospr")


def is_sharded(model: torch.nn.Module) -> bool:
    """Whether any parameter of ``model`` is a ``DTensor`` (an FSDP2-sharded model)."""
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in model.parameters())


def _check_placements(params: dict, names, group):
    import torch.distributed as dist
    from torch.distributed.tensor import DTensor, Shard

    world = dist.get_world_size(group)
    for n in names:
        p = params[n]
        if not isinstance(p, DTensor):
            raise ValueError(f"sparsepai.prune: {n!r} is not sharded while other parameters are "
                             "DTensors; shard every prunable layer with fully_shard")
        if p.device_mesh.ndim != 1 or not isinstance(p.placements[0], Shard) or \
                p.device_mesh.size() != world:
            raise ValueError(f"sparsepai.prune: {n!r} is placed as {p.placements} on a mesh of "
                             f"shape {tuple(p.device_mesh.shape)}; sharded pruning supports "
                             f"fully_shard on a 1-D mesh over the group's {world} ranks")


def _dtensor_like(local: torch.Tensor, p):
    from torch.distributed.tensor import DTensor

    return DTensor.from_local(local, p.device_mesh, p.placements, run_check=False,
                              shape=p.shape, stride=p.stride())


@contextlib.contextmanager
def _restored(model: torch.nn.Module):
    """Everything scoring may change on the user's model, put back on exit."""
    params = list(model.parameters())
    saved = [(p, p.grad, p.requires_grad, p.to_local().detach().clone()
              if hasattr(p, "to_local") else p.detach().clone()) for p in params]
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    modes = [(m, m.training) for m in model.modules()]
    try:
        yield
    finally:
        with torch.no_grad():
            for p, grad, flag, value in saved:
                (p.to_local() if hasattr(p, "to_local") else p).copy_(value)
                p.grad = grad
                p.requires_grad_(flag)
            for b, value in buffers:
                b.copy_(value)
        for m, mode in modes:
            m.train(mode)


def _local(t):
    return t.to_local() if hasattr(t, "to_local") else t


def _grads(model, params, names, batches, loss_fn, what) -> dict:
    """Local shards of dL/dw summed over ``batches`` (FSDP averages them over the ranks)."""
    from sparsepai.pruning.base import check_finite

    for p in params.values():
        p.grad = None
    for n in names:  # frozen weights are scored too
        params[n].requires_grad_(True)
    for x, y in batches:
        loss = loss_fn(model(x), y)
        check_finite(loss, what)
        loss.backward()
    return {n: torch.zeros_like(_local(params[n])) if params[n].grad is None
            else _local(params[n].grad).detach().clone() for n in names}


def _first_order_prospr(model, params, names, batches, loss_fn, cfg) -> dict:
    from sparsepai.pruning.base import check_finite

    init = {n: _local(params[n]).detach().clone() for n in names}
    model.train()
    for p in params.values():
        p.grad = None
        p.requires_grad_(True)
    opt = torch.optim.SGD(list(params.values()), lr=cfg.inner_lr, momentum=cfg.inner_momentum)
    for m in range(cfg.meta_steps):
        x, y = batches[m]
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        check_finite(loss, f"prospr inner step {m}")
        loss.backward()
        opt.step()
    g = _grads(model, params, names, batches[cfg.meta_steps:], loss_fn, "prospr meta-loss")
    return {n: (g[n] * init[n]).abs() for n in names}


def local_scores(model, method, names, data, loss_fn, cfg) -> dict:
    """``{name: local shard of the scores}`` for the sharded methods (model restored after)."""
    from sparsepai.pruning.base import take_batches

    params = dict(model.named_parameters())
    if method == "magnitude":
        return {n: _local(params[n]).detach().abs() for n in names}
    with _restored(model), torch.enable_grad():
        if method in ("snip", "force"):
            batches = take_batches(data, cfg.batches, method)
            g = _grads(model, params, names, batches, loss_fn, method)
            return {n: (g[n] * _local(params[n]).detach()).abs() for n in names}
        if cfg.first_order is not True:
            raise ValueError("sparsepai.prune: method 'prospr' on an FSDP2-sharded model needs "
                             "first_order=True (the full meta-gradient would differentiate "
                             "through FSDP's all-gathers, which sharded parameters do not "
                             "support)")
        if cfg.meta_steps < 0:
            raise ValueError(f"prospr: meta_steps must be >= 0, got {cfg.meta_steps}")
        batches = take_batches(data, cfg.meta_steps + 1, "prospr")
        return _first_order_prospr(model, params, names, batches, loss_fn, cfg)


def _force_masks(model, names, data, loss_fn, cfg, keep, group) -> list:
    """FORCE's iterative schedule on the local shards, each round one global threshold."""
    from sparsepai.ops.topk import topk_mask
    from sparsepai.pruning.base import take_batches
    from sparsepai.pruning.iterative import keep_schedule

    params = dict(model.named_parameters())
    batches = take_batches(data, cfg.batches, "force")
    original = [_local(params[n]).detach().clone() for n in names]
    total = sum(params[n].numel() for n in names)
    masks = None
    with _restored(model), torch.enable_grad():
        for k in keep_schedule(total, keep, cfg.iterations):
            with torch.no_grad():
                for i, n in enumerate(names):
                    _local(params[n]).copy_(original[i] if masks is None
                                            else original[i] * masks[i])
            g = _grads(model, params, names, batches, loss_fn, "force")
            sens = [(g[n] * w0).abs() for n, w0 in zip(names, original)]
            masks = topk_mask(sens, k, nan="low", group=group).masks
    return masks


def _config(method, options):
    from sparsepai.pruning.base import get_method, make_config

    if method not in SHARDED_METHODS:
        get_method(method)  # an unknown name gets the registry's message
        raise ValueError(f"sparsepai.prune: method {method!r} is not supported on FSDP2-sharded "
                         f"models; supported: {', '.join(SHARDED_METHODS)}")
    return make_config(get_method(method), options)


def score_sharded(model, method, data, loss_fn, group, options) -> dict:
    """``sp.score(..., group=)`` for a sharded model: ``{name: DTensor scores}``."""
    from sparsepai.pruning.base import default_loss, prunable_names

    loss_fn = default_loss(loss_fn)
    options = dict(options)
    names = prunable_names(model, options.pop("prunable", None))
    cfg = _config(method, options)
    params = dict(model.named_parameters())
    _check_placements(params, names, group)
    local = local_scores(model, method, names, data, loss_fn, cfg)
    return {n: _dtensor_like(local[n], params[n]) for n in names}


def prune_sharded(model, method, sparsity, data, loss_fn, group, options) -> dict:
    """``sp.prune(..., group=)`` for a sharded model: ``{name: DTensor bool mask}`` keeping
    exactly ``N - round(sparsity * N)`` of the N prunable weights over all ranks."""
    import torch.distributed as dist

    from sparsepai.ops.topk import topk_mask
    from sparsepai.pruning.base import default_loss, keep_count, prunable_names

    loss_fn = default_loss(loss_fn)
    options = dict(options)
    for opt in ("scope", "min_per_layer"):
        if opt in options:
            raise ValueError(f"sparsepai.prune: option {opt!r} is not supported on FSDP2-sharded "
                             "models (global thresholding only)")
    names = prunable_names(model, options.pop("prunable", None))
    cfg = _config(method, options)
    params = dict(model.named_parameters())
    _check_placements(params, names, group)
    keep = keep_count(params, names, sparsity)
    if method == "force":
        masks = _force_masks(model, names, data, loss_fn, cfg, keep, group)
    else:
        local = local_scores(model, method, names, data, loss_fn, cfg)
        masks = topk_mask([local[n] for n in names], keep, nan="low", group=group).masks
    counts = torch.tensor([int(m.sum()) for m in masks], dtype=torch.int64,
                          device=comm_device(group))
    dist.all_reduce(counts, group=group)
    for n, c in zip(names, counts.tolist()):
        if c == 0:
            warnings.warn(f"prune: layer {n!r} is fully pruned (layer collapse); consider a "
                          "lower sparsity", RuntimeWarning, stacklevel=3)
    return {n: _dtensor_like(m, params[n]) for n, m in zip(names, masks)}
