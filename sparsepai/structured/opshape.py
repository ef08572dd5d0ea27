"""Shape rules of the operator-level walk (:mod:`~sparsepai.structured.opgraph`): views and
reshapes, permutes, expands, indexing, padding, concatenation and splits. Each follows where
the channel dimension (and an attention head split) goes, or kills the channels it touches."""

from __future__ import annotations

import math

from sparsepai.structured.graph import Seg
from sparsepai.structured.heads import fused_split, reshape_heads
from sparsepai.structured.opvalues import _Info, _Param, _bind, _norm_dim, _shape


def view(w, node, name=None):
    x = w.get(node.args[0])
    if isinstance(x, _Param):
        return x
    if not isinstance(x, _Info):
        w.kill_args(node)
        return None
    ins, outs = _shape(node.args[0]), _shape(node)
    out = _reshape(ins, x, outs) if x.hd is None and x.pend is None else None
    if out is None:
        out = reshape_heads(ins, x, outs) or fused_split(w, ins, x, outs)
    if out is None:
        w.kill(x)
    return out


def permute(w, node, name):
    x = w.get(node.args[0])
    if isinstance(x, _Param) or x is None:
        return x
    if not isinstance(x, _Info):
        w.kill_args(node)
        return None
    R = len(_shape(node))
    if name == "permute":
        order = [_norm_dim(d, R) for d in node.args[1]]
    else:
        d0, d1 = (0, 1) if name == "t" else (_norm_dim(node.args[1], R),
                                             _norm_dim(node.args[2], R))
        order = list(range(R))
        order[d0], order[d1] = order[d1], order[d0]
    where = (lambda d: None if d is None else order.index(d))
    return x.but(dim=order.index(x.dim), hd=where(x.hd), pend=where(x.pend), tdim=where(x.tdim))


def expand(w, node, name):
    x = w.get(node.args[0])
    if not isinstance(x, _Info):
        return x if isinstance(x, _Param) else None
    ins, outs = _shape(node.args[0]), _shape(node)
    sh = len(outs) - len(ins)
    od = x.dim + sh
    if outs[od] != ins[x.dim]:
        w.kill(x)
        return None
    if x.hd is None:
        return x.but(dim=od)
    grown = [i for i in range(len(ins)) if ins[i] == 1 and outs[i + sh] > 1]
    if any(i not in (x.dim + 1, 0) for i in grown) or x.pend is not None or x.rep != 1:
        w.kill(x)  # only the batch and a repeat of the heads may grow
        return None
    return x.but(dim=od, hd=x.hd + sh, pend=x.dim + 1 + sh if x.dim + 1 in grown else None)


def index_like(w, node, name):
    """select / slice / narrow: fine along any dimension but the channels'."""
    x = w.get(node.args[0])
    if not isinstance(x, _Info):
        return x if isinstance(x, _Param) else None
    a = _bind(node)
    ins = _shape(node.args[0])
    d = _norm_dim(a.get("dim") or 0, len(ins))
    if d == x.dim:
        full = name == "slice" and a.get("start") in (None, 0) and a.get("step") in (None, 1) \
            and (a.get("end") is None or a["end"] >= ins[d])
        if not full:
            w.kill(x)
            return None
        return x
    if x.pend is not None or (name == "select" and d == x.hd) or \
            (x.tdim is not None and (name != "select" or d != x.tdim)):
        w.kill(x)
        return None
    if name == "select":
        return _drop_dim(x, d)
    return x


def pad(w, node, name):
    a = _bind(node)
    x = w.get(a["input"] if "input" in a else node.args[0])
    if not isinstance(x, _Info) or x.hd is not None:
        w.kill_args(node)
        return None
    pads = list(a["pad"])
    R = len(_shape(node))
    touched = {R - 1 - i // 2 for i, p in enumerate(pads) if p != 0}
    if x.dim in touched or a.get("mode", "constant") not in ("constant", "reflect",
                                                             "replicate", "circular"):
        w.kill(x)
        return None
    value = a.get("value") or 0
    return x.but(dirty=x.dirty or value != 0)


def cat(w, node, name):
    # legacy empty 1-d parts (e.g. an empty key/value cache) are skipped by cat
    nodes = [t for t in node.args[0] if _shape(t) != (0,)]
    parts = [w.get(t) for t in nodes]
    R = len(_shape(node))
    dim = _norm_dim(node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0), R)
    infos = [p for p in parts if isinstance(p, _Info)]
    if name == "cat" and infos and len(infos) < len(parts) and infos[0].dim != dim and \
            infos[0].factor == 1 and infos[0].hd is None:
        # parameters joined along another dimension (a class token before the patches):
        # narrowed with the channels, as per-channel parameters are
        axes = [w.param_axis(t, infos[0].dim, R, infos[0].length)
                for t, p in zip(nodes, parts) if not isinstance(p, _Info)]
        if all(axes):
            for pname, axis in axes:
                w.b.members.append((w.owner(pname), "scale", infos[0].segs, [(pname, axis)],
                                    infos[0].length))
            parts = infos
    if len(parts) == 1 and name == "cat":
        return parts[0]
    if name == "cat" and all(isinstance(p, _Info) and p.hd is None for p in parts) and \
            len({(p.dim, p.factor) for p in parts}) == 1 and parts[0].dim == dim:
        return _Info([s for p in parts for s in p.segs], dim, parts[0].factor,
                     any(p.dirty for p in parts))
    # along another dimension (or stacked): the parts must be one stream
    if all(isinstance(p, _Info) for p in parts) and \
            len({p.layout for p in parts}) == 1 and parts[0].pend is None and \
            (name == "cat" or parts[0].hd is None) and \
            w.b.couple_segs([p.segs for p in parts]):
        d = parts[0].dim
        return parts[0].but(segs=[Seg(s.space, s.length, None) for s in parts[0].segs],
                            dim=d + (name == "stack" and dim <= d),
                            dirty=any(p.dirty for p in parts))
    w.kill_args(node)
    return None


def split(w, node, name):
    x = w.get(node.args[0])
    val = node.meta.get("val")
    n = len(val) if isinstance(val, (tuple, list)) else 1
    if not isinstance(x, _Info):
        w.kill_args(node)
        return (None,) * n
    a = _bind(node)
    d = _norm_dim(a.get("dim") or 0, len(_shape(node.args[0])))
    if d == x.dim and name != "unbind":
        parts = _channel_split(w, x, [int(v.shape[d]) for v in val], name == "chunk")
        if parts is None:
            w.kill(x)
            return (None,) * n
        return (parts,) * n
    if d == x.dim or x.pend is not None or (name == "unbind" and d == x.hd) or \
            (x.tdim is not None and (name != "unbind" or d != x.tdim)):
        w.kill(x)
        return (None,) * n
    if name == "unbind":
        x = _drop_dim(x, d)
    return (x,) * n


def _drop_dim(x, d):
    """``x`` after dimension ``d`` (not its channels' or heads' dim) is indexed away; a
    tiling dimension goes with it (each part holds every channel once)."""
    less = (lambda k: None if k is None or k == d else k - (d < k))
    return x.but(dim=less(x.dim), hd=less(x.hd), tdim=less(x.tdim))


# attributes that hold the width of each part of a fused projection split in the forward
SPLIT_ATTRS = ("split_size",)


def _channel_split(w, x, sizes, chunk=False):
    """A split of one producer's channels into equal parts (GPT-2's fused query/key/value
    projection, a gated MLP's packed value and gate): channel ``c`` of every part shares its
    fate (one new space, which the producer's channels tile). A ``chunk`` computes the part
    size from the width it meets, so slim's narrower width splits alike; the part size of a
    ``split`` is a Python number in the forward: only a split whose size an attribute of
    :data:`SPLIT_ATTRS` on an ancestor of the producer holds is followed, and that attribute
    is recorded for slim to narrow. None otherwise."""
    if len(x.segs) != 1 or x.factor != 1 or x.hd is not None or x.pend is not None or \
            len(set(sizes)) != 1 or sum(sizes) != x.length or len(sizes) < 2:
        return None
    seg, size = x.segs[0], sizes[0]
    if chunk:
        part = w.b.new_space(size)
        w.b.link(seg.space, part)
        return x.but(segs=[Seg(part, size, seg.origin)])
    found = None
    parts = (seg.origin or "").split(".") if seg.origin else []
    for i in range(len(parts) - 1, -1, -1):
        owner = ".".join(parts[:i])
        attr = next((a for a in SPLIT_ATTRS if getattr(w.mods.get(owner), a, None) == size),
                    None)
        if attr is not None:
            found = (owner, attr)
            break
    if found is None:
        return None
    part = w.b.new_space(size)
    w.b.link(seg.space, part)
    w.b.sizes.append((*found, part))
    return x.but(segs=[Seg(part, size, seg.origin)])


def _reshape(ins, x, outs):
    """Where the channels of ``x`` (shape ``ins``) go in a reshape to ``outs``; None if a
    channel is split across dimensions or mixed with others."""
    if ins is None or outs is None:
        return None
    d, size = x.dim, ins[x.dim]
    pre = math.prod(ins[:d])
    for e in range(len(outs) + 1):
        if e < len(outs) and math.prod(outs[:e]) == pre and (outs[e] != 1 or size == 1):
            break
    else:
        return None
    if outs[e] >= size:  # trailing dims merged into the channel dim
        for k in range(d + 1, len(ins) + 1):
            if size * math.prod(ins[d + 1:k]) == outs[e]:
                return x.but(dim=e, factor=x.factor * math.prod(ins[d + 1:k]))
        return None
    per = outs[e] // x.length if outs[e] % x.length == 0 else 0  # positions per channel at e
    if per and x.factor % per == 0:
        for m in range(e + 1, len(outs) + 1):
            if math.prod(outs[e:m]) == size:
                return x.but(dim=e, factor=per)
    return None
