"""Narrowing a model in place to what channel masks keep: the layers, norms and per-channel
parameters a plan touches, attention modules' head counts, and channel-sparse layers where a
coupled stream keeps more channels than a producer (used by :func:`~sparsepai.structured.slim.slim`,
and by the capture's probe on meta copies)."""

from __future__ import annotations

import torch
from torch import nn

from sparsepai.structured.channels import rows_first, transposed
from sparsepai.structured.graph import spread
from sparsepai.structured.heads import HEAD_ATTRS
from sparsepai.structured.slim_layers import (
    ChannelScatter,
    ChannelSparseConv2d,
    ChannelSparseLinear,
    ChannelSubset,
)


def _idx(mask):
    return torch.nonzero(mask, as_tuple=False).flatten()

def narrow_model(new: nn.Module, graph, plan) -> None:
    """Narrow ``new`` (a copy of the model ``graph`` describes) in place to the channels of
    ``plan`` (a :class:`~sparsepai.structured.channels.Plan`): layers narrowed or replaced,
    head counts and split sizes scaled. Tied parameters are left untied."""
    mods = dict(new.named_modules())

    # input columns of every layer that reads a group
    cols: dict = {}
    for r in graph.reads:
        w = rows_first(mods[r.module], mods[r.module].weight)
        keep = cols.setdefault(r.module, torch.ones(w.shape[1], dtype=torch.bool))
        keep[r.col_offset:r.col_offset + r.span] = spread(plan.live[r.group], r.factor, r.tiles)
    # channels of members (norms, depthwise layers, per-channel scales), with the ones whose
    # parameters are zeroed
    member_ch: dict = {}
    for g in graph.groups.values():
        for mem in g.members:
            ch, zero, _ = member_ch.setdefault((mem.module, mem.tensors), ([], [], mem))
            keep = spread(plan.live[g.id], mem.expand, mem.tiles)
            ch.append(torch.arange(mem.offset, mem.offset + mem.span)[keep])
            zero.append(~spread(plan.member_mask(mem), mem.expand, mem.tiles)[keep])

    for name, gid in graph.producer_group.items():
        mod = mods[name]
        live = graph.groups[gid].spread(name, plan.live[gid])
        own = plan.rows(name)
        in_cols = _idx(cols[name]) if name in cols else None
        if torch.equal(own, live):
            _narrow(mod, _idx(own), in_cols)
        else:
            _replace(new, name, _sparse(mod, own, live, in_cols))
    for (name, _), (ch, zero, mem) in member_ch.items():
        ch, zero = torch.cat(ch), torch.cat(zero)
        order = torch.argsort(ch)  # members spanning several groups list them by offset
        _replace(new, name, _narrow_member(mods[name], mem, ch[order], zero[order]))
    _fewer_heads(new, graph, plan, mods)
    for name, attr, gid in graph.sizes:  # channel counts the forward reads (split sizes)
        g = graph.groups[gid]
        mod = new.get_submodule(name)
        setattr(mod, attr, getattr(mod, attr) * int(plan.live[gid].sum()) // g.size)


# attributes attention modules keep of their head counts (and of heads * head size)
def _fewer_heads(root, graph, plan, mods):
    """Scale the head counts that the attention modules owning pruned attention units read
    in their forward (the nearest ancestor of the projections that has any of
    :data:`HEAD_ATTRS`; shared config objects are left alone). ``mods``: the modules before
    any was replaced."""
    done = set()
    for g in graph.prunable_groups():
        if not g.expand or any(isinstance(mods[p], nn.modules.conv._ConvNd)
                               for p in g.producers):
            continue  # no attention unit (grouped convolutions expand too)
        kept = int(plan.live[g.id].sum())
        for p in g.producers:
            parts = p.split(".")
            for i in range(len(parts) - 1, -1, -1):
                name = ".".join(parts[:i])
                mod = root.get_submodule(name)
                attrs = [a for a in HEAD_ATTRS if isinstance(getattr(mod, a, None), int)]
                if attrs:
                    if name not in done:
                        done.add(name)
                        for a in attrs:
                            setattr(mod, a, getattr(mod, a) * kept // g.size)
                    break


def _tied(root) -> list:
    """``[(module name, attribute), ...]`` for every parameter that several modules share
    (a language model head tied to its embedding)."""
    where: dict = {}
    for name, mod in root.named_modules(remove_duplicate=False):
        for attr, p in mod._parameters.items():
            if p is not None:
                where.setdefault(id(p), set()).add((name, attr))
    return [sorted(v) for v in where.values() if len(v) > 1]


def _retie(root, tied) -> None:
    """Share again the parameters that :func:`_tied` found shared, where narrowing gave each
    user its own copy (the same rows and columns: the same values); a copy that differs stays
    separate."""
    def same(p, q):  # meta tensors hold no values: there the same shape is the same copy
        return p.shape == q.shape and (p.is_meta or q.is_meta or torch.equal(p, q))

    for users in tied:
        ps = [getattr(root.get_submodule(n), a, None) for n, a in users]
        if any(p is None for p in ps):
            continue  # a user was replaced (a partial-stream wrapper): left as narrowed
        if all(same(p, ps[0]) for p in ps[1:]):
            for n, a in users[1:]:
                setattr(root.get_submodule(n), a, ps[0])


def _replace(root, name, module):
    if module is not None:
        root.set_submodule(name, module)


def _take(w, rows, cols):
    if rows is not None:
        w = w.index_select(0, rows)
    if cols is not None:
        w = w.index_select(1, cols)
    return w.clone()


def _set(mod, attr, value):
    """Replace a parameter or buffer of ``mod``, keeping its kind and ``requires_grad``."""
    old = getattr(mod, attr)
    if isinstance(old, nn.Parameter):
        setattr(mod, attr, nn.Parameter(value, requires_grad=old.requires_grad))
    else:
        mod._buffers[attr] = value


def _narrow(mod, rows, cols):
    """Narrow a convolution or linear layer in place to output channels ``rows`` and input
    channels ``cols`` (the module keeps its class, so subclasses such as same-padding
    convolutions keep their forward). Returns ``mod``."""
    if getattr(mod, "groups", 1) > 1:
        mod.groups = _groups_kept(mod, rows)
    alias = transposed(mod)  # before its weight changes shape
    with torch.no_grad():
        w = _take(rows_first(mod, mod.weight.detach()), rows, cols)
        _set(mod, "weight", (w.t() if alias else w).contiguous())
        if getattr(mod, "bias", None) is not None:
            _set(mod, "bias", mod.bias.detach().index_select(0, rows).clone())
    n_out, n_in = w.shape[:2]
    if isinstance(mod, nn.Embedding):
        mod.embedding_dim = n_out
    elif alias:
        mod.nf = n_out
    elif isinstance(mod, nn.Linear):
        mod.out_features, mod.in_features = n_out, n_in
    else:
        mod.out_channels, mod.in_channels = n_out, n_in * mod.groups
    return mod


def _groups_kept(mod, rows):
    """The ``groups`` of a grouped convolution narrowed to output channels ``rows``: whole
    groups pruned (each kept group keeps every row) leave fewer groups; the same rows pruned
    in every group (pruning within groups) leave all of them."""
    per = mod.weight.shape[0] // mod.groups
    counts = torch.bincount(rows // per, minlength=mod.groups)
    if bool(((counts == 0) | (counts == per)).all()):
        return int((counts > 0).sum())
    if bool((counts == counts[0]).all()):
        return mod.groups
    raise ValueError(f"slim: the kept output channels of a grouped convolution ({mod.groups} "
                     "groups) are neither whole groups nor the same number in every group")


def _sparse(mod, own, live, cols):
    """A producer writing only its own channels into a wider stream."""
    if getattr(mod, "groups", 1) > 1:
        # a grouped convolution's groups read their own input channels: it keeps every live
        # group, with zero filters for the ones this producer drops
        _narrow(mod, _idx(live), cols)
        with torch.no_grad():
            off = ~own[live]
            mod.weight[off] = 0
            if mod.bias is not None:
                mod.bias[off] = 0
        return mod
    rows = _idx(own)
    pos = torch.searchsorted(_idx(live), rows)  # own channel -> position in the slim stream
    width = int(live.sum())
    if type(mod) is nn.Linear:
        w = _take(mod.weight.detach(), rows, cols)
        b = mod.bias.detach().index_select(0, rows).clone() if mod.bias is not None else None
        return ChannelSparseLinear(w, b, pos, width)
    if transposed(mod):  # features last, as a linear layer's
        return ChannelScatter(_narrow(mod, rows, cols), pos, width, dim=-1)
    if type(mod) is not nn.Conv2d or mod.padding_mode != "zeros" or isinstance(mod.padding, str):
        return ChannelScatter(_narrow(mod, rows, cols), pos, width)
    w = _take(mod.weight.detach(), rows, cols)
    b = mod.bias.detach().index_select(0, rows).clone() if mod.bias is not None else None
    in_idx = torch.arange(w.shape[1])
    return ChannelSparseConv2d(w, b, in_idx, pos, width, mod.stride, mod.padding, mod.dilation)


_CHANNELWISE = (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm,
                nn.GroupNorm, nn.modules.conv._ConvNd)


def _narrow_member(mod, mem, ch, zero):
    """Narrow a member layer in place to its channels ``ch``; those flagged in ``zero`` are not
    computed by their producer: a channelwise module then runs on the others only (wrapped in
    a :class:`ChannelSubset`); other members keep them with zero parameters."""
    if bool(zero.any()) and isinstance(mod, _CHANNELWISE) and \
            getattr(mod, "num_groups", 0) == getattr(mod, "num_channels", 0):
        inner = _narrow_member(mod, mem, ch[~zero], torch.zeros(int((~zero).sum()),
                                                                 dtype=torch.bool))
        return ChannelSubset(mod if inner is None else inner, _idx(~zero), ch.numel())
    if ch.numel() == mem.width and not bool(zero.any()):
        return None
    root_len = len(mem.module) + 1 if mem.module else 0
    with torch.no_grad():
        for tname, axis in mem.tensors:
            attr = tname[root_len:]
            t = getattr(mod, attr).detach().index_select(axis, ch).clone()
            if bool(zero.any()) and t.is_floating_point() and "running" not in attr:
                t[(slice(None),) * axis + (zero,)] = 0
            _set(mod, attr, t)
    n = ch.numel()
    if isinstance(mod, nn.modules.batchnorm._BatchNorm) or \
            isinstance(mod, nn.modules.instancenorm._InstanceNorm):
        mod.num_features = n
    elif isinstance(mod, nn.GroupNorm):  # one channel per group, or the same in every group
        mod.num_groups, mod.num_channels = (n if mod.num_groups == mod.num_channels
                                            else mod.num_groups), n
    elif isinstance(mod, (nn.LayerNorm, nn.RMSNorm)):  # only with norm_streams (approximate)
        mod.normalized_shape = (n,)
    elif isinstance(mod, nn.modules.conv._ConvNd) and mem.kind == "depthwise":
        mod.in_channels = mod.out_channels = mod.groups = n
    return None
