"""``sp.slim``: a physically smaller copy of a channel-masked model.

Every convolution, linear, norm and depthwise layer (and per-channel parameter) that a channel
mask touches is narrowed in place on a deep copy, keeping its class (so subclasses such as
same-padding convolutions or norm-activation layers keep their forward): grouped convolutions
lose the same channels in every group (or whole groups), attention projections whole heads (and the attention module's head counts
are updated). A coupled residual stream keeps the channels
any of its producers keeps; a producer that keeps fewer writes into the stream through a
channel-sparse convolution (``sparsepai.ops.channel_sparse_conv2d``), and the norm after it
keeps the stream's width with the affine parameters of its dropped channels at zero, which is
exactly what the masked dense model computes. The model's own class and ``forward`` are kept
(modules are swapped in place on a deep copy), so the slim model is an ordinary module that any
``torch.optim`` optimizer trains and ``torch.export`` exports.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from sparsepai.structured.channels import resolve, rows_first, transposed
from sparsepai.structured.graph import analyse, spread
from sparsepai.structured.slim_layers import (
    ChannelScatter,
    ChannelSparseConv2d,
    ChannelSparseLinear,
    ChannelSubset,
)

SLIM_ATTR = "sparsepai_channel_masks"
FORMAT = "sparsepai.slim/1"


def _idx(mask):
    return torch.nonzero(mask, as_tuple=False).flatten()


def round_masks(graph, plan, multiple: int) -> dict:
    """Channel masks whose stream widths are multiples of ``multiple``: the lowest-numbered
    dropped channels of each stream are kept again (in every producer that kept the whole
    stream), with their original weights."""
    masks = {n: m.clone() for n, m in plan.own.items()}
    for g in graph.prunable_groups():
        live = plan.live[g.id]
        want = min(g.size, -(-int(live.sum()) // multiple) * multiple)
        extra = _idx(~live)[: want - int(live.sum())]
        for p in g.producers:
            if torch.equal(plan.own[p], live):
                masks[p][extra] = True
    return {n: graph.groups[graph.producer_group[n]].spread(n, m) for n, m in masks.items()}


@torch.no_grad()
def slim(model: nn.Module, channel_masks: dict, *, round_to: int = 1,
         example_inputs=None, norm_streams: bool | None = None) -> nn.Module:
    """A physically smaller copy of ``model`` with the pruned channels removed.

    Args:
        model: the dense model (left untouched). Its weights need not be masked: the slim
            model equals ``sp.apply_masks(copy_of_model, channel_masks)``.
        channel_masks: ``{module name: bool (out_channels,)}`` as ``sp.prune(...,
            structured=True)`` returns; missing modules keep every channel.
        round_to: round each stream's channel count up to a multiple of this (e.g. 8) by
            keeping some dropped channels (the lowest-numbered) with their weights; the masks
            actually used are recorded on the result.
        example_inputs: an input to capture the model on (a tensor, a tuple of positional
            arguments or a dict of keyword arguments); by default the graph ``sp.prune`` built
            for this architecture is reused (see :func:`~sparsepai.structured.graph.analyse`).
        norm_streams: as ``sp.prune``'s option (None: as the reused graph was built). With
            it, channels under a layer or group norm are removed and the norm normalises the
            kept channels only: the slim model then approximates the masked dense model
            instead of equalling it.

    Returns:
        A deep copy of ``model`` with smaller layers; ``result.sparsepai_channel_masks`` holds
        the masks it implements. In train and eval mode it computes what the masked dense model
        computes (to float32 rounding), unless built with ``norm_streams``.

    Raises:
        ValueError/TypeError: masks that do not match the model, or that remove every channel of
            a layer; ``TraceError`` when the model cannot be captured.
    """
    graph = analyse(model, example_inputs, norm_streams)
    plan = resolve(graph, dict(channel_masks), "slim")
    if round_to < 1:
        raise ValueError(f"slim: round_to must be >= 1, got {round_to}")
    if round_to > 1:
        plan = resolve(graph, round_masks(graph, plan, round_to), "slim")
    new = copy.deepcopy(model)
    tied = _tied(new)
    narrow_model(new, graph, plan)
    _retie(new, tied)
    setattr(new, SLIM_ATTR, {n: plan.rows(n) for n, m in plan.own.items()
                             if not bool(m.all()) or n in channel_masks})
    return new


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
HEAD_ATTRS = ("num_heads", "num_attention_heads", "num_key_value_heads", "num_kv_heads",
              "n_heads", "n_kv_heads", "all_head_size", "attn_dim")


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
    for users in tied:
        ps = [getattr(root.get_submodule(n), a, None) for n, a in users]
        if any(p is None for p in ps):
            continue  # a user was replaced (a partial-stream wrapper): left as narrowed
        if all(p.shape == ps[0].shape and torch.equal(p, ps[0]) for p in ps[1:]):
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


def save_slim(model: nn.Module, path: str) -> None:
    """Save a slim model: its state_dict and the channel masks that rebuild its structure from
    the dense architecture, in one safetensors file (no pickle), written atomically.

    Args:
        model: a model returned by :func:`slim`.
        path: the ``.safetensors`` file to write (missing folders are created).
    """
    from sparsepai import _io

    masks = getattr(model, SLIM_ATTR, None)
    if masks is None:
        raise ValueError("save_slim: the model was not made by sp.slim (no channel masks)")
    tensors = {f"state.{k}": v for k, v in model.state_dict().items()}
    tensors.update({f"mask.{k}": v.to(torch.uint8) for k, v in masks.items()})
    _io.save_tensors(path, tensors, {"format": FORMAT, "model_class": type(model).__name__,
                                     "masks": sorted(masks)})


def load_slim(path: str, model: nn.Module, example_inputs=None) -> nn.Module:
    """Rebuild a slim model saved by :func:`save_slim`.

    Args:
        path: the file.
        model: a dense model of the same architecture (e.g. freshly constructed); untouched.
        example_inputs: as for :func:`slim`.

    Returns:
        The slim model with the saved weights.

    Raises:
        FileNotFoundError: no such file. ValueError: a truncated, corrupt or non-safetensors
            file, not a slim model, or one of another architecture; naming ``path``.
    """
    from sparsepai import _io

    tensors, meta = _io.read_tensors(path, "slim model")
    if meta.get("format") != FORMAT:
        raise ValueError(f"load_slim: {path} is not a sparsepai slim model (format "
                         f"{meta.get('format')!r}, expected {FORMAT!r})")
    if meta.get("model_class") != type(model).__name__:
        raise ValueError(f"load_slim: {path} holds a slim {meta.get('model_class')}, the "
                         f"model given is a {type(model).__name__}")
    masks = {k[5:]: v.bool() for k, v in tensors.items() if k.startswith("mask.")}
    state = {k[6:]: v for k, v in tensors.items() if k.startswith("state.")}
    try:
        out = slim(model, masks, example_inputs=example_inputs)
        out.load_state_dict(state)
    except (RuntimeError, ValueError, KeyError, TypeError) as exc:  # corrupt or foreign tensors
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ValueError(f"load_slim: {path}: its tensors do not rebuild the model given "
                         f"({reason[:300]})") from None
    return out
