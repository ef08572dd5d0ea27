"""Unstructured pruning in one process: the saliency of every prunable weight from the method
registry, and keep-masks thresholded from it with ``sp.topk_mask`` (globally, per layer, or
with a floor per layer). ``sp.score`` and ``sp.prune`` (:mod:`sparsepai.api`) call these,
directly or on every rank through the distributed driver."""

from __future__ import annotations

import warnings

import torch

from sparsepai.core.loss import default_loss
from sparsepai.core.model import scoring_model
from sparsepai.core.options import (
    check_min_per_layer,
    check_no_nan,
    check_sparsity,
    explain_inference_mode,
    make_config,
)
from sparsepai.core.prunable import keep_count, prunable_names
from sparsepai.core.registry import get_method
from sparsepai.masks.threshold import SCOPES, threshold


def score_weights(model: torch.nn.Module, method: str, data=None, *, loss_fn=None,
                  **options) -> dict:
    """``sp.score`` in one process: see :func:`sparsepai.api.score` for the arguments, the
    result and its shapes."""
    m = get_method(method)
    options = dict(options)
    prunable = options.pop("prunable", None)
    cfg = make_config(m, options)
    names = prunable_names(model, prunable)
    with explain_inference_mode("score", method), \
            scoring_model(model, names, m.in_place) as work, torch.enable_grad():
        out = m.scores(m.saliency(work, names, data, default_loss(loss_fn), cfg))
        return {n: out[n].detach() for n in names}


def prune_weights(model: torch.nn.Module, method: str, sparsity: float, data=None, *,
                  loss_fn=None, **options) -> dict:
    """``sp.prune`` in one process, unstructured: see :func:`sparsepai.api.prune` for the
    arguments (``scope``, ``min_per_layer`` and ``prunable`` among the options), the result and
    its shapes."""
    check_sparsity(sparsity)
    options = dict(options)
    scope = options.pop("scope", "global")
    min_per_layer = options.pop("min_per_layer", 0)
    if scope not in SCOPES:
        raise ValueError(f"prune: scope must be 'global' or 'layer', got {scope!r}")
    check_min_per_layer(min_per_layer, scope)
    m = get_method(method)
    names = prunable_names(model, options.pop("prunable", None))
    cfg = make_config(m, options)
    params = dict(model.named_parameters())
    keep = keep_count(params, names, sparsity)
    forced = sum(min(min_per_layer, params[n].numel()) for n in names)
    if forced > keep:
        raise ValueError(f"prune: min_per_layer={min_per_layer} keeps {forced} weights, more "
                         f"than the {keep} the sparsity allows")
    def thresh(scores, keep, transform="none"):  # every round of an iterative method too
        check_no_nan(method, scores)
        return threshold(scores, keep, scope=scope, min_per_layer=min_per_layer,
                         transform=transform)

    with explain_inference_mode("prune", method), \
            scoring_model(model, names, m.in_place) as work, torch.enable_grad():
        masks = m.masks(work, names, data, default_loss(loss_fn), cfg, keep, thresh)
    masks = {n: masks[n].to(params[n].device) for n in names}
    for n in names:
        if not bool(masks[n].any()):
            warnings.warn(f"prune: layer {n!r} is fully pruned (layer collapse); consider "
                          "min_per_layer=... or a lower sparsity", RuntimeWarning, stacklevel=4)
    return masks
