"""``sp.score`` / ``sp.prune`` with ``group=``: the distributed driver.

Order of work on every rank:

1. One all-gather of a fingerprint (method, sparsity, structured, options, the parameters' names
   and shapes, and for replicated models an exact digest of the weights): a rank called with
   other arguments, or a replica whose weights differ, raises the same ``ValueError`` on every
   rank before any other collective, instead of a hang.
2. Sharded (FSDP2) models go to :mod:`sparsepai.distributed.sharded`. Replicated ones
   (a plain module or ``DistributedDataParallel``, unwrapped) are scored by the ordinary
   single-process code with gradients averaged over the group
   (:mod:`sparsepai.distributed.replicated`); data-free methods (random, magnitude, SynFlow)
   exchange nothing.
3. Replicated results are checked identical across ranks (an exact digest, one all-gather).

Structured pruning of a replicated model averages the channel scores' gradients the same way, so
every rank computes the same channel scores and masks (no broadcast of rank 0's decision).
AutoSparse runs its predictor on each rank, on the averaged gradients.
"""

from __future__ import annotations

import contextlib

from sparsepai._comm import all_gather_ints, check_group, check_same, digest, stable_repr
from sparsepai.core.options import check_sparsity
from sparsepai.distributed.replicated import averaging
from sparsepai.distributed.sharded import is_sharded, prune_sharded, score_sharded

NO_EXCHANGE = ("random", "magnitude", "synflow")  # data-free: identical without averaging


def _unwrap(model):
    """(the replicated module, the prefix its names carry in ``model.named_parameters()``)."""
    from torch.nn.parallel import DistributedDataParallel

    if isinstance(model, DistributedDataParallel):
        return model.module, "module."
    return model, ""


def _strip_prunable(options: dict, prefix: str) -> dict:
    prunable = options.get("prunable")
    if prefix and prunable is not None and not callable(prunable):
        options = dict(options, prunable=[n[len(prefix):] if n.startswith(prefix) else n
                                          for n in prunable])
    return options


def _fingerprint(where, model, method, options, group, replicated, **extra):
    params = list(model.named_parameters())
    fields = {"method": method}
    fields.update({k: stable_repr(v) for k, v in extra.items()})
    fields["options"] = stable_repr(options)
    fields["model (parameter names and shapes)"] = ";".join(
        f"{n}:{tuple(p.shape)}" for n, p in params)
    if replicated:
        # replicas must start from the same weights, or their masks silently differ
        fields["model weights (replicated models need identical weights on every rank)"] = \
            digest([p for _, p in params] + list(model.buffers()))
    check_same(fields, group, where)


def _check_identical(where, tensors, group):
    rows = all_gather_ints([digest(tensors)], group)
    if any(r != rows[0] for r in rows):
        raise RuntimeError(f"{where}: the ranks computed different results although their "
                           "arguments and weights agree (non-deterministic model or data "
                           "of unequal batch sizes?)")


def _averaging(method, group):
    return contextlib.nullcontext() if method in NO_EXCHANGE else averaging(group)


def score_group(model, method, data, loss_fn, group, options, *, local) -> dict:
    """``sp.score(..., group=group)``; see the module docstring. ``local(model, method, data,
    loss_fn=, **options)`` scores a replicated model in one process (``sparsepai.api`` passes
    it, so this layer imports no pruning driver)."""
    check_group("sparsepai.score", group)
    sharded = is_sharded(model)
    inner, prefix = (model, "") if sharded else _unwrap(model)
    _fingerprint("sparsepai.score", inner, method, options, group, not sharded)
    if sharded:
        return score_sharded(inner, method, data, loss_fn, group, options)
    with _averaging(method, group):
        out = local(inner, method, data, loss_fn=loss_fn, **_strip_prunable(options, prefix))
    _check_identical("sparsepai.score", list(out.values()), group)
    return {prefix + n: s for n, s in out.items()}


def prune_group(model, method, sparsity, data, structured, loss_fn, group, options, *,
                local) -> dict:
    """``sp.prune(..., group=group)``; see the module docstring. ``local(model, method,
    sparsity, data, structured=, loss_fn=, **options)`` prunes a replicated model in one process
    (``sparsepai.api`` passes it)."""
    check_group("sparsepai.prune", group)
    sharded = is_sharded(model)
    inner, prefix = (model, "") if sharded else _unwrap(model)
    _fingerprint("sparsepai.prune", inner, method, options, group, not sharded,
                 sparsity=sparsity, structured=structured)
    check_sparsity(sparsity)
    if sharded:
        if structured:
            raise ValueError("sparsepai.prune: structured pruning of FSDP2-sharded models is not "
                             "supported; prune the replicated model (group=) before sharding")
        return prune_sharded(inner, method, sparsity, data, loss_fn, group, options)
    with _averaging(method, group):
        masks = local(inner, method, sparsity, data, structured=structured, loss_fn=loss_fn,
                      **_strip_prunable(options, prefix))
    _check_identical("sparsepai.prune", list(masks.values()), group)
    return {prefix + n: m for n, m in masks.items()}
