"""Structured pruning: channel scores per coupled group (magnitude, random, SNIP's 3SP,
ProsPr's meta-gradient, optionally weighted by each channel's cost) and exact global
thresholding into channel masks: ``sp.prune(..., structured=True)``."""

from __future__ import annotations

import math
import warnings

import torch

from sparsepai.core.model import scoring_model
from sparsepai.core.options import check_min_per_layer, check_no_nan, make_config
from sparsepai.core.registry import get_method
from sparsepai.ops.topk import topk_mask
from sparsepai.structured import cost
from sparsepai.structured.analysis import analyse
from sparsepai.structured.capture import example_from
from sparsepai.structured.channels import kept_weights, prunable_modules, rows_first

STRUCTURED_METHODS = ("magnitude", "prospr", "random", "snip")


def _row_sum(t):
    return t.reshape(t.shape[0], -1).sum(1)


def check_method(method) -> None:
    if method not in STRUCTURED_METHODS:
        raise ValueError(f"structured pruning supports the methods {', '.join(STRUCTURED_METHODS)}"
                         f"; got {method!r}")


# Structured defaults per method, chosen by the worst cell of benchmarks/bench_defaults_grid.py
# (90% of the weights, 2-3 epochs; benchmarks/results/defaults_grid): ProsPr's channel scores are
# first order, tempered by the channel's cost (cost_weighting=0.5), and every layer keeps at least
# 8 channels. ResNet-20 (He): -1.6 points against dense at 2.2x; LeNet-5 (PyTorch's init): +1.1
# points at 1.2x. The former default (full meta-gradient, cost_weighting=True, a floor of one
# channel) lost 2.3 points on ResNet-20 and collapsed LeNet-5 to one convolution channel (chance
# accuracy, every seed); no option set measured reached both 2x and 2 points on LeNet-5.
CHANNEL_DEFAULTS = {"prospr": {"first_order": True, "cost_weighting": 0.5, "min_per_layer": 8}}


def channel_defaults(method: str) -> dict:
    """The options ``sp.prune(model, method, ..., structured=True)`` uses unless given
    (``cost_weighting`` is ``False`` and ``min_per_layer`` 1 for methods not listed)."""
    return dict(CHANNEL_DEFAULTS.get(method, {}))


def group_scores(model, graph, method, data, loss_fn, options) -> dict:
    """Per prunable group, one score per channel (higher = more important).

    ``magnitude``: the L1 norm of the channel's filters, summed over the group's producers.
    ``random``: uniform, from ``seed``. ``snip`` (3SP, van Amersfoort et al. 2020,
    https://arxiv.org/abs/2007.00389) and ``prospr``: |dL/dc| for one mask entry c per channel
    multiplying the channel's weights in every producer of the group, which is the sum of the
    signed per-weight sensitivities over the channel's weights. ``cost_weighting=True`` (3SP's
    compute-aware variant) divides each channel's score by its multiply-adds relative to the
    mean channel's, so that for equal sensitivity the expensive channels (large feature maps) go
    first; a number ``alpha >= 0`` divides by that relative cost to the power ``alpha`` (a
    tempered weighting: ``True`` is 1, ``False`` 0). Any structured method takes it; its default
    is in :func:`channel_defaults` (0.5 for ProsPr, measured, else ``False``). ``data``
    must then have a batch to measure the feature-map sizes.
    """
    groups = graph.prunable_groups()
    defaults = channel_defaults(method)
    defaults.pop("min_per_layer", None)  # a thresholding option (prune_channels)
    options = {**defaults, **options}
    alpha = cost.cost_exponent(options.pop("cost_weighting", False))
    check_method(method)
    m = get_method(method)
    cfg = make_config(m, options)
    if method == "random":  # one draw per channel, not a sum of per-weight draws
        gen = torch.Generator().manual_seed(cfg.seed)
        out = {g.id: torch.rand(g.size, generator=gen) for g in groups}
        return cost.cost_weighted(out, model, graph, data, alpha)
    names = [f"{p}.weight" for g in groups for p in g.producers]
    mods = dict(model.named_modules())
    with scoring_model(model, names, m.in_place) as work, torch.enable_grad():
        sal = m.saliency(work, names, data, loss_fn, cfg)
        per = {n: _row_sum(rows_first(mods[n[:-7]], sal[n].detach().abs() if m.sum_magnitudes
                                      else sal[n].detach())) for n in names}
        del sal
    out = {}
    for g in groups:
        # dL/dc for one mask entry per channel shared by every producer of the group is the sum
        # of the signed saliencies over the channel's weights; the magnitude is taken after it
        s = sum(g.fold(p, per[f"{p}.weight"].float().cpu()) for p in g.producers)
        out[g.id] = s.abs() if m.absolute else s
    return cost.cost_weighted(out, model, graph, data, alpha)


def prune_channels(model, method, sparsity, data, loss_fn, options) -> dict:
    """``sp.prune(..., structured=True)``: :func:`group_scores` then :func:`threshold_channels`.
    """
    options = dict(options)
    unit = options.pop("unit", "weights")
    scope = options.pop("scope", "global")
    norm_streams = options.pop("norm_streams", False)
    # the default floor goes with the global ranking; scope="layer" keeps a fraction of each layer
    floor = channel_defaults(method).get("min_per_layer", 1) if scope == "global" else 1
    default_floor = "min_per_layer" not in options
    min_per_layer = options.pop("min_per_layer", floor)
    if not isinstance(norm_streams, bool):
        raise TypeError(f"sp.prune(structured=True): norm_streams must be a bool, got "
                        f"{type(norm_streams).__name__}")
    options.pop("prunable", None)
    if unit not in ("weights", "channels"):
        raise ValueError(f"unit must be 'weights' or 'channels', got {unit!r}")
    if scope not in ("global", "layer"):
        raise ValueError(f"sp.prune(structured=True): scope must be 'global' or 'layer', got "
                         f"{scope!r}")
    if scope == "layer" and unit != "channels":
        raise ValueError("sp.prune(structured=True): scope='layer' prunes the same fraction of "
                         "every layer's channels; pass unit='channels' with it")
    # 1 is the structured default (no layer is removed whole), so it goes with either scope
    check_min_per_layer(min_per_layer, "global" if min_per_layer == 1 else scope)
    check_method(method)  # before asking for an example input
    graph = analyse(model, example_from(options, data, "sp.prune(structured=True)"),
                    norm_streams)
    if not graph.prunable_groups():
        raise ValueError("structured pruning: the model has no prunable channels (every "
                         "convolution/linear output reaches the model's output or an operation "
                         "whose channels cannot be traced)" + (
                             "" if norm_streams else "; norm_streams=True also prunes channels "
                             "under layer/group norms (slim then approximates the masked model)"))
    if default_floor and min_per_layer > 1:
        min_per_layer = reachable_floor(model, graph, sparsity, unit, min_per_layer, method)
    scores = group_scores(model, graph, method, data, loss_fn, options)
    check_no_nan(method, {"+".join(g.producers): scores[g.id] for g in graph.prunable_groups()},
                 "channel groups")
    return threshold_channels(model, graph, scores, sparsity, unit, scope, min_per_layer)


def _budget(model, groups, sparsity, unit) -> tuple:
    """``(kept, total)``: how many channels (``unit="channels"``) or Conv/Linear weights the
    masks keep at ``sparsity``, and how many there are."""
    if unit == "channels":
        total = sum(g.size for g in groups)
    else:
        total = sum(mod.weight.numel() for _, mod in prunable_modules(model))
    return total - round(sparsity * total), total


def reachable_floor(model, graph, sparsity, unit, floor, method) -> int:
    """The largest channel floor ``k <= floor`` that still reaches ``sparsity`` (a default floor
    must not make a small model unprunable: 8 channels per layer of a net with 8-channel layers
    keep every weight). Warns when it is below ``floor``; checked before any scoring."""
    groups = graph.prunable_groups()
    target, _ = _budget(model, groups, sparsity, unit)

    def fits(k):
        if unit == "channels":
            return sum(min(k, g.size) for g in groups) <= target
        return kept_weights(model, graph, {g.id: min(k, g.size) for g in groups}) <= target
    k = floor
    while k > 1 and not fits(k):
        k -= 1
    if k < floor:
        warnings.warn(f"sp.prune(structured=True): {method}'s default min_per_layer={floor} "
                      f"cannot reach sparsity {sparsity} on this model; using min_per_layer={k}",
                      RuntimeWarning, stacklevel=4)
    return k


def threshold_channels(model, graph, scores, sparsity, unit="weights", scope="global",
                       min_per_layer=1) -> dict:
    """Channel masks keeping the best channels of ``scores`` (global ranking, ``sp.topk_mask``).

    Every group of ``n`` channels keeps at least its best ``max(1, min(min_per_layer, n))``
    (a layer is never removed whole; a higher floor stops layer collapse, where a layer is
    thinned to a channel or two: VGG-19 at 95% under some methods, README). With
    ``unit="weights"`` the number of kept channels is the one whose kept Conv/Linear weights
    (counting the input columns that die with a pruned channel) are closest to
    ``N - round(sparsity * N)`` (found by bisection over the score order); with
    ``unit="channels"`` exactly ``C - round(sparsity * C)`` channels of the C prunable ones are
    kept (at least one per group). ``scope="layer"`` (with ``unit="channels"``) ranks inside
    each group instead: every group of ``n`` channels keeps ``max(1, n - round(sparsity * n))``,
    the uniform per-layer ratio other structured pruners (e.g. Torch-Pruning) default to.

    Args:
        model: the model ``graph`` describes.
        graph: :func:`~sparsepai.structured.graph.analyse` of it.
        scores: ``{group id: (size,) scores}`` for every prunable group.
        sparsity: in [0, 1).
        unit: ``"weights"`` or ``"channels"``.
        scope: ``"global"`` (one ranking over all groups) or ``"layer"``.
        min_per_layer: the fewest channels a group keeps (its size if smaller; at least 1).

    Returns:
        ``{producer module name: bool (out_channels,)}``; coupled producers share one mask.
    """
    groups = graph.prunable_groups()
    floors = [max(1, min(min_per_layer, g.size)) for g in groups]
    boosted = []
    for g, k in zip(groups, floors):
        s = scores[g.id].detach().clone().float().cpu().nan_to_num(nan=-math.inf)
        # kept whatever the global ranking says; a stable sort breaks ties by the first index
        s[torch.sort(s, descending=True, stable=True).indices[:k]] = math.inf
        boosted.append(s)
    channels = sum(g.size for g in groups)
    fewest = sum(floors)

    def counts_for(t):
        res = topk_mask(boosted, t, nan="low")
        return res.masks, {g.id: int(m.sum()) for g, m in zip(groups, res.masks)}

    if scope == "layer":
        masks = [topk_mask([b], max(1, g.size - round(sparsity * g.size)), nan="low").masks[0]
                 for g, b in zip(groups, boosted)]
        return {p: g.spread(p, m) for g, m in zip(groups, masks)
                for p in g.producers}
    target, n_all = _budget(model, groups, sparsity, unit)
    if unit == "channels":
        t = max(fewest, target)
    else:
        def kept(t):
            return kept_weights(model, graph, counts_for(t)[1])

        lo, hi = fewest, channels
        if kept(lo) > target:
            best = kept(lo)
            least = "one channel" if fewest == len(groups) else f"min_per_layer={min_per_layer}"
            raise ValueError(f"structured pruning cannot reach sparsity {sparsity}: keeping "
                             f"{least} per layer keeps {best} of {n_all} weights "
                             f"(sparsity {1 - best / n_all:.4f})"
                             + ("; a lower min_per_layer keeps fewer" if fewest > len(groups)
                                else ""))
        while lo < hi:  # the fewest channels whose kept weights reach the target
            mid = (lo + hi) // 2
            if kept(mid) >= target:
                hi = mid
            else:
                lo = mid + 1
        t = lo
        if t > fewest and target - kept(t - 1) < kept(t) - target:
            t -= 1  # one channel fewer is closer to the target
    masks, _ = counts_for(t)
    out = {}
    for g, m in zip(groups, masks):
        for p in g.producers:
            out[p] = g.spread(p, m)
    return out
