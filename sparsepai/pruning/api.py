"""``sp.score`` and ``sp.prune``: saliency of every prunable weight, and keep-masks from it."""

from __future__ import annotations

import warnings

import torch

from sparsepai.pruning.base import (
    default_loss,
    get_method,
    keep_count,
    make_config,
    private_copy,
    prunable_names,
)


def score(model: torch.nn.Module, method: str, data=None, *, loss_fn=None, group=None,
          **options) -> dict:
    """Saliency of every prunable weight (higher = more important).

    Args:
        model: the network, at initialization. Left exactly as it was (weights, buffers,
            gradients, train/eval mode): methods run on a private copy.
        method: one of ``"random"``, ``"magnitude"``, ``"snip"``, ``"grasp"``, ``"synflow"``,
            ``"force"``, ``"prospr"``, ``"autosparse"`` (``predictor=``: a trained
            ``sp.autosparse.Predictor`` or its file) (see each module's config for its options).
        data: an iterable of ``(inputs, targets)`` batches (not needed by random, magnitude,
            synflow with ``input_shape``).
        loss_fn: ``loss_fn(outputs, targets)``, default ``torch.nn.functional.cross_entropy``.
        group: a ``torch.distributed`` process group; every rank calls with its own ``data``.
            Replicated models (plain or ``DistributedDataParallel``) get gradients averaged over
            the group, sharded ones (FSDP2) ``DTensor`` scores of their own shards: see
            :mod:`sparsepai.distributed.pruning`.
        **options: the method's options, plus ``prunable`` (which weights are scored: names, or a
            predicate; default every Conv/Linear weight).

    Returns:
        ``{parameter name: scores}``, in ``model.named_parameters()`` order.

    Shapes:
        ``scores[name].shape == dict(model.named_parameters())[name].shape``.
    """
    if group is not None:
        from sparsepai.distributed.pruning import score_group

        return score_group(model, method, data, loss_fn, group, options)
    m = get_method(method)
    options = dict(options)
    prunable = options.pop("prunable", None)
    cfg = make_config(m, options)
    names = prunable_names(model, prunable)
    work = private_copy(model)
    with torch.enable_grad():
        out = m.score(work, names, data, default_loss(loss_fn), cfg)
    return {n: out[n].detach() for n in names}


def check_sparsity(sparsity):
    """A clear error unless ``sparsity`` is a number in [0, 1)."""
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)):
        raise TypeError(f"sparsity must be a number in [0, 1), got {type(sparsity).__name__}")
    if not 0 <= sparsity < 1:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")


def _threshold(scores: dict, names, keep: int, scope: str, min_per_layer: int) -> dict:
    from sparsepai.ops.topk import topk_mask

    sizes = [scores[n].numel() for n in names]
    if scope == "layer":
        # each layer keeps its share; largest remainders make the total exactly `keep`
        total = sum(sizes)
        exact = [keep * s / total for s in sizes]
        per = [int(e) for e in exact]
        for i in sorted(range(len(names)), key=lambda i: per[i] - exact[i])[: keep - sum(per)]:
            per[i] += 1
        return {n: topk_mask([scores[n]], k, nan="low").masks[0] for n, k in zip(names, per)}
    if scope != "global":
        raise ValueError(f"scope must be 'global' or 'layer', got {scope!r}")
    if min_per_layer:
        forced = sum(min(min_per_layer, s) for s in sizes)
        if forced > keep:
            raise ValueError(f"min_per_layer={min_per_layer} keeps {forced} weights, more than "
                             f"the {keep} the sparsity allows")
        boosted = {}
        for n in names:
            s = scores[n].detach().clone().float()
            k = min(min_per_layer, s.numel())
            if k:
                top = topk_mask([s], k, nan="low").masks[0]
                s[top] = float("inf")
            boosted[n] = s
        scores = boosted
    res = topk_mask([scores[n] for n in names], keep, nan="low")
    return dict(zip(names, res.masks))


def prune(model: torch.nn.Module, method: str, sparsity: float, data=None, *,
          structured: bool = False, loss_fn=None, group=None, **options) -> dict:
    """Keep-masks (bool, True = kept) from :func:`score`, thresholded with ``sp.topk_mask``.

    Args:
        model, method, data, loss_fn, group: as for :func:`score`; with ``group`` every rank
            gets the same masks (replicated), or ``DTensor`` masks of its shards thresholded
            globally (sharded).
        sparsity: the fraction of prunable weights removed, in [0, 1). Of the N prunable weights
            exactly ``N - round(sparsity * N)`` are kept.
        structured: channel masks instead: ``{module name: bool (out_channels,)}`` for every
            convolution and linear layer whose outputs can be pruned (not the classifier);
            coupled layers (residual sums) get the same mask. Methods: ``magnitude`` (filter
            L1 norm), ``random``, ``snip`` (3SP; option ``cost_weighting``), ``prospr`` (the
            meta-gradient with respect to channel masks). ``sparsity`` counts the weights
            removed including the input columns that die with a pruned channel (closest from
            above at channel granularity), or with ``unit="channels"`` the channels. See
            :func:`sparsepai.structured.channels.prune_channels`.
        **options: the method's options, plus ``prunable``, ``scope`` (``"global"``, default, or
            ``"layer"``: every layer keeps the same fraction) and ``min_per_layer`` (with global
            scope, at least this many weights kept in every layer, against layer collapse).

    Returns:
        ``{parameter name: bool mask}`` shaped like the parameters. A layer left with no weight
        raises a warning naming it.
    """
    if group is not None:
        from sparsepai.distributed.pruning import prune_group

        return prune_group(model, method, sparsity, data, structured, loss_fn, group, options)
    check_sparsity(sparsity)
    if structured:
        from sparsepai.structured.channels import prune_channels

        return prune_channels(model, method, sparsity, data, default_loss(loss_fn), options)
    options = dict(options)
    scope = options.pop("scope", "global")
    min_per_layer = int(options.pop("min_per_layer", 0))
    m = get_method(method)
    prunable = options.get("prunable")
    names = prunable_names(model, prunable)
    params = dict(model.named_parameters())
    keep = keep_count(params, names, sparsity)
    if m.prune is not None and scope == "global" and not min_per_layer:
        options.pop("prunable", None)
        cfg = make_config(m, options)
        with torch.enable_grad():
            masks = m.prune(private_copy(model), names, data, default_loss(loss_fn), cfg, keep)
        masks = {n: masks[n].to(params[n].device) for n in names}
    else:
        scores = score(model, method, data, loss_fn=loss_fn, **options)
        masks = _threshold(scores, names, keep, scope, min_per_layer)
    for n in names:
        if not bool(masks[n].any()):
            warnings.warn(f"prune: layer {n!r} is fully pruned (layer collapse); consider "
                          "min_per_layer=... or a lower sparsity", RuntimeWarning, stacklevel=2)
    return masks
