"""Channel masks: validating them against a model's channel graph, turning them into weight
masks, counting the weights they keep, and structured scoring + exact thresholding.

A channel mask dict maps the name of a producer module (a convolution or linear layer) to a bool
vector over its output channels (True = kept). Producers coupled by a residual sum write one
stream; the stream keeps a channel if any producer keeps it (a producer that drops it writes
zeros there). Batch norms and depthwise convolutions follow the producer they read from
directly, or the stream after a sum.
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn

from sparsepai.structured.graph import ChannelGraph, analyse, spread

STRUCTURED_METHODS = ("magnitude", "prospr", "random", "snip")


@dataclasses.dataclass
class Plan:
    """Resolved channel masks: per group the live channels (the stream), per producer its own."""

    graph: ChannelGraph
    live: dict  # group id -> bool (size,)
    own: dict  # producer name -> bool (size,), per unit of its group

    def rows(self, producer: str) -> torch.Tensor:
        """The producer's kept output rows (its units expanded to their rows)."""
        g = self.graph.groups[self.graph.producer_group[producer]]
        return g.spread(producer, self.own[producer])

    def member_mask(self, member) -> torch.Tensor:
        if member.origin is not None and member.origin in self.own:
            return self.own[member.origin]
        return self.live[member.group]


def resolve(graph: ChannelGraph, masks: dict, what: str = "channel masks") -> Plan:
    """Check ``masks`` against the graph and resolve streams; clear errors on bad input."""
    if not isinstance(masks, dict):
        raise TypeError(f"{what}: expected a dict {{module name: bool tensor}}, "
                        f"got {type(masks).__name__}")
    unknown = sorted(set(masks) - set(graph.producer_group))
    if unknown:
        raise ValueError(f"{what}: no convolution or linear layer named {unknown[:5]} in the "
                         "model (keys are module names, as in model.named_modules())")
    own = {}
    for name, gid in graph.producer_group.items():
        grp = graph.groups[gid]
        size, e, n = grp.size, grp.rows(name), grp.width(name)
        m = masks.get(name)
        if m is None:
            own[name] = torch.ones(size, dtype=torch.bool)
            continue
        if not isinstance(m, torch.Tensor) or m.dtype != torch.bool:
            raise TypeError(f"{what}: the mask of {name!r} must be a bool tensor")
        if m.shape != (n,):
            raise ValueError(f"{what}: the mask of {name!r} has shape {tuple(m.shape)}; the "
                             f"layer has {n} output channels")
        m = m.detach().cpu()
        if not bool(m.any()):
            raise ValueError(f"{what}: the mask of {name!r} removes every output channel of the "
                             "layer; keep at least one")
        if not graph.groups[gid].prunable and not bool(m.all()):
            raise ValueError(f"{what}: the output channels of {name!r} cannot be pruned (they "
                             "reach the model's output or an operation whose channels cannot be "
                             "traced); its mask must keep every channel")
        blocks = m.view(n // (size * e), size, e)
        if not bool((blocks == blocks[:1, :, :1]).all()):
            raise ValueError(f"{what}: the mask of {name!r} splits an attention head (or a "
                             f"convolution group): its {n} outputs are kept or pruned in "
                             f"whole blocks of {e}" + (", the same in each of its "
                                                      f"{n // (size * e)} groups"
                                                      if n > size * e else ""))
        own[name] = blocks[0, :, 0].clone()
    live = {}
    for gid, g in graph.groups.items():
        u = torch.zeros(g.size, dtype=torch.bool)
        for p in g.producers:
            u |= own[p]
        if not g.producers:
            u[:] = True
        live[gid] = u
    return Plan(graph, live, own)


def _rows(mask, shape):
    return mask.view(-1, *([1] * (len(shape) - 1))).expand(shape)


def transposed(mod) -> bool:
    """Whether ``mod`` stores its weight with the output channels second: ``transformers``'
    ``Conv1D`` (in, out) and an embedding (entries, features)."""
    from sparsepai.core.registry import is_linear_alias

    return is_linear_alias(mod) or isinstance(mod, nn.Embedding)


def rows_first(mod, t):
    """``t`` (a layer's weight, or a tensor shaped like it) viewed with the output channels
    first and the inputs (an embedding's entries) second."""
    return t.t() if transposed(mod) else t


def weight_masks(model: nn.Module, plan: Plan) -> dict:
    """Element masks ``{parameter name: bool tensor}`` equivalent to the channel masks: pruned
    rows of producers (weight and bias), per-channel parameters of their norms and depthwise
    convolutions, and the input columns of dead channels in the layers that read them."""
    graph = plan.graph
    params = dict(model.named_parameters())
    mods = dict(model.named_modules())
    out: dict = {}

    def restrict(pname, mask):
        if pname not in params:
            return
        p = params[pname]
        cur = out.get(pname)
        m = mask.to(p.device)
        out[pname] = m.clone() if cur is None else cur & m

    for name, gid in graph.producer_group.items():
        if not graph.groups[gid].prunable:
            continue
        own = plan.rows(name)
        w = params.get(f"{name}.weight")
        if w is not None:
            shape = rows_first(mods[name], w).shape
            restrict(f"{name}.weight", rows_first(mods[name], _rows(own, shape)))
        restrict(f"{name}.bias", own)
    for g in graph.groups.values():
        if not g.prunable:
            continue
        for mem in g.members:
            keep = torch.ones(mem.width, dtype=torch.bool)
            keep[mem.offset:mem.offset + mem.span] = \
                spread(plan.member_mask(mem), mem.expand, mem.tiles)
            for tname, axis in mem.tensors:
                p = params.get(tname)
                if p is not None:
                    restrict(tname, _along(keep, p.shape, axis))
    for r in graph.reads:
        if not graph.groups[r.group].prunable:
            continue
        pname = f"{r.module}.weight"
        w = params.get(pname)
        if w is None:
            continue
        mod = mods[r.module]
        shape = rows_first(mod, w).shape
        cols = torch.ones(shape[1], dtype=torch.bool)
        cols[r.col_offset:r.col_offset + r.span] = spread(plan.live[r.group], r.factor, r.tiles)
        restrict(pname, rows_first(mod, cols.view(1, -1, *([1] * (w.dim() - 2))).expand(shape)))
    return out


def _along(mask, shape, axis):
    """``mask`` laid along dimension ``axis`` of a tensor of ``shape``, broadcast elsewhere."""
    view = [1] * len(shape)
    view[axis] = -1
    return mask.view(view).expand(shape)


def prunable_modules(model: nn.Module) -> list:
    from sparsepai.core.registry import is_prunable_module

    return [(n, m) for n, m in model.named_modules() if is_prunable_module(m)]


def kept_weights(model: nn.Module, graph: ChannelGraph, counts: dict) -> int:
    """How many Conv/Linear weights stay when group ``g`` keeps ``counts[g]`` channels and every
    producer of a group keeps the same channels (what ``prune`` makes)."""
    reads: dict = {}
    for r in graph.reads:
        reads.setdefault(r.module, []).append(r)
    depthwise: dict = {}  # depthwise module -> [(group, channels)] it spans
    for g in graph.groups.values():
        for mem in g.members:
            if mem.kind == "depthwise":
                depthwise.setdefault(mem.module, []).append(
                    (g.id, mem.length, mem.expand * mem.tiles))
    total = 0
    for name, mod in prunable_modules(model):
        w = rows_first(mod, mod.weight)
        per = w[0, 0].numel() if w.dim() > 2 else 1
        if name in depthwise:
            total += per * sum(counts.get(gid, size) * e for gid, size, e in depthwise[name])
            continue
        gid = graph.producer_group.get(name)
        grp = graph.groups.get(gid)
        rows = counts.get(gid, grp.size) * grp.width(name) // grp.size \
            if gid is not None else w.shape[0]
        cols = w.shape[1]
        for r in reads.get(name, ()):
            cols -= (r.length - counts.get(r.group, r.length)) * r.factor * r.tiles
        total += rows * cols * per
    return total


# ------------------------------------------------------------------------------------------
# structured scoring

def _row_sum(t):
    return t.reshape(t.shape[0], -1).sum(1)


def check_method(method) -> None:
    if method not in STRUCTURED_METHODS:
        raise ValueError(f"structured pruning supports the methods {', '.join(STRUCTURED_METHODS)}"
                         f"; got {method!r}")


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
    is ``cost.DEFAULT_WEIGHTING`` (``True`` for ProsPr, measured, else ``False``). ``data``
    must then have a batch to measure the feature-map sizes.
    """
    from sparsepai.core.registry import get_method, make_config, private_copy
    from sparsepai.structured import cost  # it reads layers through this module's helpers

    groups = graph.prunable_groups()
    options = dict(options)
    alpha = cost.cost_exponent(options.pop("cost_weighting", cost.default_weighting(method)))
    check_method(method)
    m = get_method(method)
    cfg = make_config(m, options)
    if method == "random":  # one draw per channel, not a sum of per-weight draws
        gen = torch.Generator().manual_seed(cfg.seed)
        out = {g.id: torch.rand(g.size, generator=gen) for g in groups}
        return cost.cost_weighted(out, model, graph, data, alpha)
    names = [f"{p}.weight" for g in groups for p in g.producers]
    work = private_copy(model, names)
    with torch.enable_grad():
        sal = m.saliency(work, names, data, loss_fn, cfg)
    mods = dict(model.named_modules())
    per = {n: _row_sum(rows_first(mods[n[:-7]], sal[n].detach())) for n in names}
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
    min_per_layer = options.pop("min_per_layer", 1)
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
    from sparsepai.api import check_min_per_layer

    # 1 is the structured default (no layer is removed whole), so it goes with either scope
    check_min_per_layer(min_per_layer, "global" if min_per_layer == 1 else scope)
    check_method(method)  # before asking for an example input
    from sparsepai.structured.capture import example_from

    graph = analyse(model, example_from(options, data, "sp.prune(structured=True)"),
                    norm_streams)
    if not graph.prunable_groups():
        raise ValueError("structured pruning: the model has no prunable channels (every "
                         "convolution/linear output reaches the model's output or an operation "
                         "whose channels cannot be traced)" + (
                             "" if norm_streams else "; norm_streams=True also prunes channels "
                             "under layer/group norms (slim then approximates the masked model)"))
    scores = group_scores(model, graph, method, data, loss_fn, options)
    from sparsepai.api import check_no_nan

    check_no_nan(method, {"+".join(g.producers): scores[g.id] for g in graph.prunable_groups()},
                 "channel groups")
    return threshold_channels(model, graph, scores, sparsity, unit, scope, min_per_layer)


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
    from sparsepai.ops.topk import topk_mask

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
    if unit == "channels":
        t = max(fewest, channels - round(sparsity * channels))
    else:
        n_all = sum(mod.weight.numel() for _, mod in prunable_modules(model))
        target = n_all - round(sparsity * n_all)

        def kept(t):
            return kept_weights(model, graph, counts_for(t)[1])

        lo, hi = fewest, channels
        if kept(lo) > target:
            best = kept(lo)
            least = "one channel" if fewest == len(groups) else f"min_per_layer={min_per_layer}"
            raise ValueError(f"structured pruning cannot reach sparsity {sparsity}: keeping "
                             f"{least} per layer keeps {best} of {n_all} weights "
                             f"(sparsity {1 - best / n_all:.4f})")
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
