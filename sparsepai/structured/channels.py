"""Channel masks: validating them against a model's channel graph, turning them into weight
masks and counting the weights they keep (the geometry; scoring and thresholding channels is
:mod:`~sparsepai.structured.prune`).

A channel mask dict maps the name of a producer module (a convolution or linear layer) to a bool
vector over its output channels (True = kept). Producers coupled by a residual sum write one
stream; the stream keeps a channel if any producer keeps it (a producer that drops it writes
zeros there). Batch norms and depthwise convolutions follow the producer they read from
directly, or the stream after a sum.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from sparsepai.core.prunable import is_linear_alias, is_prunable_module
from sparsepai.structured.graph import ChannelGraph, spread


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
