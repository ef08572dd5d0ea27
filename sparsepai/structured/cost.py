"""Compute-weighted channel scores (option ``cost_weighting`` of structured pruning): what one
channel of each group costs in multiply-adds, and scores divided by a power of that cost
(the exponent tempers the weighting: 0 is plain saliency, 1 saliency per multiply-add)."""

from __future__ import annotations

import math

import torch

from sparsepai.core.model import private_copy, take_batches
from sparsepai.structured.channels import prunable_modules, rows_first


def cost_exponent(value) -> float:
    """The exponent of option ``cost_weighting``: ``True`` -> 1.0, ``False`` -> 0.0, a number
    ``>= 0`` as is."""
    if isinstance(value, bool):
        return float(value)
    if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"sp.prune(structured=True): cost_weighting must be a bool or a number "
                         f">= 0, got {value!r}")
    return float(value)


def cost_weighted(scores, model, graph, data, alpha) -> dict:
    """Each channel's score divided by (its multiply-adds / the mean channel's) ** alpha."""
    if alpha == 0:
        return scores
    cost = channel_costs(model, graph, data)
    mean = torch.cat([cost[gid] for gid in scores]).mean()
    return {gid: s / (cost[gid] / mean) ** alpha for gid, s in scores.items()}


def channel_costs(model, graph, data) -> dict:
    """Multiply-adds per sample that one channel of each group costs: its rows in the producers
    and depthwise members, and its columns in the layers that read it (spatial sizes from one
    forward pass on the first batch)."""
    (x, _), = take_batches(data, 1, "cost_weighting")
    work = private_copy(model)
    spatial = {}
    hooks = [mod.register_forward_hook(
        lambda mod, inp, out, name=name: spatial.__setitem__(name, out[0, 0].numel()))
        for name, mod in prunable_modules(work)]
    with torch.no_grad():
        work.eval()(x[:1])
    for h in hooks:
        h.remove()
    mods = dict(prunable_modules(work))
    cost = {}
    for g in graph.prunable_groups():
        c = 0.0
        for p in g.producers:
            if p not in mods:
                continue  # an embedding (norm_streams): no multiply-adds
            w = rows_first(mods[p], mods[p].weight)
            c += w[0].numel() * spatial.get(p, 1) * g.width(p) // g.size
        for mem in g.members:
            if mem.kind == "depthwise":
                c += mods[mem.module].weight[0].numel() * spatial.get(mem.module, 1)
        cost[g.id] = c
    for r in graph.reads:
        if r.group in cost:
            w = rows_first(mods[r.module], mods[r.module].weight)
            per_col = (w[0, 0].numel() if w.dim() > 2 else 1) * w.shape[0]
            cost[r.group] += per_col * r.factor * r.tiles * spatial.get(r.module, 1)
    return {gid: torch.full((graph.groups[gid].size,), c) for gid, c in cost.items()}
