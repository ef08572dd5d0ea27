"""FSDP2-sharded models (``fully_shard``, ``DTensor`` parameters) under ``group=``.

Each rank scores only its own shards (``DTensor.to_local()``): gradients come from FSDP's own
forward/backward (its all-gathers, and its reduce-scatter, which averages the ranks' gradients
as for training), so a rank never holds more than FSDP already gives it. Thresholding is one
global ``sp.topk_mask(..., group=)`` over the local shards, so exactly ``N - round(s N)``
weights are kept over the whole model; ties at the threshold are kept in rank order (then
parameter order, then flat index), which differs from one process's tensor order only for
exactly equal scores. Scores and masks are ``DTensor``s placed like their parameters.

Methods: ``magnitude``, ``snip``, ``force`` and first-order ``prospr``, each the registry's own
saliency (and FORCE's schedule) run on the sharded model: the one place that makes gradients,
``sparsepai.core.loss.loss_grads``, takes them by ``backward`` for sharded parameters
(:func:`backward_grads`), and thresholding is the global one above. The full ProsPr
meta-gradient would differentiate through FSDP's all-gathers, which FSDP2's sharded parameters
do not support (they are not in the autograd graph of the forward); it raises a clear error.
The user's model is used in place (FSDP modules cannot be deep-copied) and restored: weights,
buffers, gradients, ``requires_grad`` and train/eval mode are as they were afterwards.
"""

from __future__ import annotations

import contextlib
import warnings

import torch

from sparsepai._comm import comm_device
from sparsepai.core.loss import default_loss, register_sharded_grads
from sparsepai.core.model import borrowed
from sparsepai.core.options import make_config, nan_error
from sparsepai.core.prunable import keep_count, prunable_names
from sparsepai.core.registry import get_method
from sparsepai.ops.topk import topk_mask

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


def _local(t):
    return t.to_local() if hasattr(t, "to_local") else t


def backward_grads(loss: torch.Tensor, wrt) -> list:
    """dL/dw for sharded parameters ``wrt`` (``DTensor`` gradients placed like them), by
    ``loss.backward()``: FSDP2's sharded parameters are not in the forward's autograd graph, their
    gradients arrive through FSDP's reduce-scatter (which averages the ranks' gradients, as for
    training). ``sparsepai.core.loss.loss_grads`` calls this for them (registered below);
    other parameters' ``.grad`` may accumulate meanwhile (the callers here restore the model
    afterwards)."""
    wrt = list(wrt)
    for t in wrt:
        t.grad = None
    loss.backward()
    out = [torch.zeros_like(t) if t.grad is None else t.grad.detach() for t in wrt]
    for t in wrt:
        t.grad = None
    return out


register_sharded_grads(backward_grads)


def _threshold(params, group, method: str):
    """``threshold(scores, keep)`` for ``Method.masks``: one global top-k over the local shards of
    every rank, masks as ``DTensor``s placed like their parameters. NaN scores in any rank's
    shard raise on every rank (never ranked lowest, never a rank left waiting)."""
    import torch.distributed as dist

    def threshold(scores: dict, keep: int, transform: str = "none") -> dict:
        names = list(scores)
        flags = torch.tensor([int(bool(torch.isnan(_local(scores[n])).any())) for n in names],
                             dtype=torch.int64, device=comm_device(group))
        dist.all_reduce(flags, group=group)
        bad = [n for n, f in zip(names, flags.tolist()) if f]
        if bad:
            raise nan_error(method, bad, len(names))
        masks = topk_mask([_local(scores[n]) for n in names], keep, nan="low", group=group,
                          transform=transform).masks
        return {n: _dtensor_like(m, params[n]) for n, m in zip(names, masks)}

    return threshold


@contextlib.contextmanager
def _scoring(model, names, m):
    """The sharded model, scored in place (FSDP modules cannot be deep-copied) and restored
    afterwards; its weights too for a method that steps them (FORCE). The others copy no weight
    here: magnitude and SNIP change none, first-order ProsPr restores what it steps itself."""
    with borrowed(model, names, values=not m.in_place), torch.enable_grad():
        yield


def _method(method, options):
    """The registry's method and its checked config, for the methods sharded models support."""
    if method not in SHARDED_METHODS:
        get_method(method)  # an unknown name gets the registry's message
        raise ValueError(f"sparsepai.prune: method {method!r} is not supported on FSDP2-sharded "
                         f"models; supported: {', '.join(SHARDED_METHODS)}")
    m = get_method(method)
    cfg = make_config(m, options)
    if method == "prospr" and cfg.first_order is not True:
        raise ValueError("sparsepai.prune: method 'prospr' on an FSDP2-sharded model needs "
                         "first_order=True (the full meta-gradient would differentiate "
                         "through FSDP's all-gathers, which sharded parameters do not "
                         "support)")
    return m, cfg


def _prepare(model, method, loss_fn, group, options):
    options = dict(options)
    names = prunable_names(model, options.pop("prunable", None))
    m, cfg = _method(method, options)
    params = dict(model.named_parameters())
    _check_placements(params, names, group)
    return default_loss(loss_fn), names, m, cfg, params


def score_sharded(model, method, data, loss_fn, group, options) -> dict:
    """``sp.score(..., group=)`` for a sharded model: ``{name: DTensor scores}``."""
    loss_fn, names, m, cfg, params = _prepare(model, method, loss_fn, group, options)
    with _scoring(model, names, m):
        scores = m.scores(m.saliency(model, names, data, loss_fn, cfg))
    return {n: _dtensor_like(_local(scores[n]).detach(), params[n]) for n in names}


def prune_sharded(model, method, sparsity, data, loss_fn, group, options) -> dict:
    """``sp.prune(..., group=)`` for a sharded model: ``{name: DTensor bool mask}`` keeping
    exactly ``N - round(sparsity * N)`` of the N prunable weights over all ranks."""
    import torch.distributed as dist

    for opt in ("scope", "min_per_layer"):
        if opt in options:
            raise ValueError(f"sparsepai.prune: option {opt!r} is not supported on FSDP2-sharded "
                             "models (global thresholding only)")
    loss_fn, names, m, cfg, params = _prepare(model, method, loss_fn, group, options)
    keep = keep_count(params, names, sparsity)
    with _scoring(model, names, m):
        masks = m.masks(model, names, data, loss_fn, cfg, keep, _threshold(params, group, method))
    local = [_local(masks[n]) for n in names]
    counts = torch.tensor([int(x.sum()) for x in local], dtype=torch.int64,
                          device=comm_device(group))
    dist.all_reduce(counts, group=group)
    for n, c in zip(names, counts.tolist()):
        if c == 0:
            warnings.warn(f"prune: layer {n!r} is fully pruned (layer collapse); consider a "
                          "lower sparsity", RuntimeWarning, stacklevel=3)
    return {n: _dtensor_like(x, params[n]) for n, x in zip(names, local)}
