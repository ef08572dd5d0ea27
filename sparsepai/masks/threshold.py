"""Scores to keep-masks: the one thresholding path of the package (global, per layer, or global
with a floor per layer), exact kept counts through ``sp.topk_mask``.

Unstructured pruning thresholds weight scores with it (every round of an iterative method
too); structured pruning thresholds channel scores with ``min_per_layer=1`` (a layer is never
removed whole).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from sparsepai.ops.topk import topk_mask

SCOPES = ("global", "layer")


def layer_counts(sizes, keep: int) -> list[int]:
    """How many entries each layer keeps when every layer keeps the same fraction.

    Args:
        sizes: entries per layer.
        keep: entries kept in total, ``0 <= keep <= sum(sizes)``.

    Returns:
        One count per layer, ``<= size``, summing to ``keep`` exactly: each layer gets
        ``floor(keep * size / total)`` and the largest remainders one more.
    """
    sizes = list(sizes)
    total = sum(sizes)
    exact = [keep * s / total if total else 0.0 for s in sizes]
    per = [int(e) for e in exact]
    for i in sorted(range(len(sizes)), key=lambda i: per[i] - exact[i])[: keep - sum(per)]:
        per[i] += 1
    return per


def protect(scores: list, min_per_layer: int, transform: str = "none") -> list:
    """Copies of ``scores`` (of their magnitudes with ``transform="abs"``) whose best
    ``min_per_layer`` entries per tensor are raised to +inf, so that a global top-k keeps them
    first (NaN ranks lowest)."""
    out = []
    for s in scores:
        s = s.detach().abs() if transform == "abs" else s.detach().clone()
        k = min(min_per_layer, s.numel())
        if k:
            s[topk_mask([s], k, nan="low").masks[0]] = math.inf
        out.append(s)
    return out


def threshold(scores, keep: int, *, scope: str = "global", min_per_layer: int = 0, group=None,
              transform: str = "none"):
    """Keep-masks holding exactly ``keep`` of the scores (higher = kept, NaN lowest).

    Args:
        scores: ``{name: float tensor}`` or a sequence of float tensors, one per layer.
        keep: entries kept in total, ``0 <= keep <= N``.
        scope: ``"global"`` (one ranking over every layer) or ``"layer"`` (every layer keeps the
            same fraction, :func:`layer_counts`, ranked within the layer).
        min_per_layer: with ``"global"`` scope, every layer keeps at least its best
            ``min_per_layer`` entries (all of a smaller layer), against layer collapse.
        group: a ``torch.distributed`` process group for the global ranking (each rank passes
            its own shards; see ``sp.topk_mask``).
        transform: ``"abs"`` ranks the magnitudes of ``scores`` without making them
            (``sp.topk_mask``'s ``transform``).

    Returns:
        Bool masks (True = kept) in the container type of ``scores``, same keys or order.

    Shapes:
        ``masks[i].shape == scores[i].shape``.
    """
    names = list(scores) if isinstance(scores, Mapping) else None
    tensors = [scores[n] for n in names] if names is not None else list(scores)
    if scope not in SCOPES:
        raise ValueError(f"threshold: scope must be 'global' or 'layer', got {scope!r}")
    if isinstance(min_per_layer, bool) or not isinstance(min_per_layer, int) or min_per_layer < 0:
        raise ValueError(f"threshold: min_per_layer must be an int >= 0, got {min_per_layer!r}")
    if scope == "layer" and min_per_layer:
        raise ValueError("threshold: min_per_layer applies to scope='global' only (per-layer "
                         "scope already keeps every layer's share)")
    if scope == "layer":
        if group is not None:
            raise ValueError("threshold: scope='layer' does not take a process group")
        per = layer_counts([t.numel() for t in tensors], keep)
        masks = [topk_mask([t], k, nan="low", transform=transform).masks[0]
                 for t, k in zip(tensors, per)]
    else:
        if min_per_layer:
            forced = sum(min(min_per_layer, t.numel()) for t in tensors)
            if forced > keep:
                raise ValueError(f"threshold: min_per_layer={min_per_layer} keeps {forced} "
                                 f"entries, more than the {keep} the sparsity allows")
            tensors, transform = protect(tensors, min_per_layer, transform), "none"
        masks = list(topk_mask(tensors, keep, nan="low", group=group, transform=transform).masks)
    return dict(zip(names, masks)) if names is not None else masks

