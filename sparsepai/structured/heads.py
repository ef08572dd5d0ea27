"""Attention heads in the operator-level graph: the head split and merge of a projection's
features, grouped-query attention's repeat of key/value heads, and
``scaled_dot_product_attention``, which ties a key/value head, its query heads and their
output-projection inputs into one pruning *unit* (kept or pruned whole).

Why whole units: a head pruned alone from the queries (or keys) still attends uniformly, so
its output is not zero; only with its values gone is it. And the forward's views keep one head
size for all heads, so a head is never narrowed, only removed.
"""

from __future__ import annotations

import math

from sparsepai.structured.graph import Seg
from sparsepai.structured.opvalues import _bind, _Info, _shape

# the attributes holding an attention module's head counts (scaled when heads are pruned)
HEAD_ATTRS = ("num_heads", "num_attention_heads", "num_key_value_heads", "num_kv_heads",
              "n_heads", "n_kv_heads", "all_head_size", "attn_dim")


def _nonunit(shape):
    return [i for i, s in enumerate(shape) if s != 1]


def reshape_heads(ins, x, outs):
    """Where the channels of ``x`` go in a reshape from ``ins`` to ``outs`` that splits them
    into (heads, head features), merges them back, or repeats heads; None otherwise."""
    if ins is None or outs is None:
        return None
    a, b = _nonunit(ins), _nonunit(outs)
    if [ins[i] for i in a] == [outs[i] for i in b] and x.dim in a and \
            (x.hd is None or x.hd in a) and (x.pend is None or x.pend in a):
        where = (lambda d: None if d is None else b[a.index(d)])
        return x.but(dim=where(x.dim), hd=where(x.hd), pend=where(x.pend))
    d = x.dim
    pre = math.prod(ins[:d])
    e = next((i for i in range(len(outs)) if math.prod(outs[:i]) == pre and outs[i] != 1), None)
    if e is None:
        return None
    if x.hd is None and x.pend is None:  # split: (..., H*D, ...) -> (..., H, D, ...)
        if x.factor == 1 and e + 1 < len(outs) and outs[e] * outs[e + 1] == ins[d] and \
                outs[e + 1] > 1 and all(s.length % outs[e + 1] == 0 for s in x.segs):
            return x.but(dim=e, hd=e + 1)
        return None
    if x.pend is None and x.hd == d + 1 and x.rep == 1 and outs[e] == ins[d] * ins[d + 1]:
        return x.but(dim=e, hd=None)  # merge back: (..., H, D, ...) -> (..., H*D, ...)
    if x.pend == d + 1 and x.hd > x.pend and e == d and outs[e] == ins[d] * ins[d + 1] and \
            tuple(outs[e + 1:]) == tuple(ins[d + 2:]):
        return x.but(hd=x.hd - 1, rep=ins[d + 1], pend=None)  # (Hkv, r, ...) -> (Hkv*r, ...)
    return None


def fused_split(walker, ins, x, outs):
    """A fused projection's reshape ``(..., 3*H*D) -> (..., 3, H, D)`` (timm's ``qkv``): the
    leading dim tiles the channels (query, key, value), each part ``H`` heads of ``D``. Only
    when an ancestor of the producer holds ``H`` in a head-count attribute (which slim
    updates); None otherwise."""
    if ins is None or outs is None or x.hd is not None or x.pend is not None or \
            x.tdim is not None or x.factor != 1 or len(x.segs) != 1 or not x.segs[0].origin:
        return None
    d = x.dim
    pre = math.prod(ins[:d])
    e = next((i for i in range(len(outs)) if math.prod(outs[:i]) == pre and outs[i] != 1), None)
    if e is None or e + 2 >= len(outs) or math.prod(outs[e:e + 3]) != ins[d] or \
            tuple(outs[e + 3:]) != tuple(ins[d + 1:]) or min(outs[e:e + 3]) < 2:
        return None
    t, h, hd = outs[e:e + 3]
    parts = x.segs[0].origin.split(".")
    owners = (walker.mods.get(".".join(parts[:i])) for i in range(len(parts) - 1, -1, -1))
    if not any(getattr(m, a, None) == h for m in owners for a in HEAD_ATTRS):
        return None
    part = walker.b.new_space(h * hd)
    walker.b.link(x.segs[0].space, part)
    return x.but(segs=[Seg(part, h * hd, x.segs[0].origin)], dim=e + 1, hd=e + 2, tdim=e)


def attention(walker, node):
    """``scaled_dot_product_attention(q, k, v, ...)`` on split heads: one unit per key/value
    head, linking the query, key and value spaces to it (a query space writes ``r * D`` rows
    per unit with ``r`` query heads per key/value head) and making the output a new space of
    ``r * D`` features per unit (what the output projection reads). Anything else kills."""
    a = _bind(node)
    q, k, v = (walker.get(a[n]) for n in ("query", "key", "value"))
    mask = walker.get(a.get("attn_mask"))
    shapes = [_shape(a[n]) for n in ("query", "key", "value")]
    infos = (q, k, v)
    mshape = _shape(a.get("attn_mask")) or ()
    # a mask or bias per head (Swin's relative positions) would need narrowing with the heads
    ok = all(isinstance(t, _Info) and t.hd is not None and t.pend is None and len(t.segs) == 1
             and t.factor == 1 for t in infos) and not isinstance(mask, _Info) and \
        not v.dirty and (len(mshape) < 3 or mshape[-3] == 1)
    if ok:
        R = len(shapes[0])
        ok = all(t.dim == R - 3 and t.hd == R - 1 for t in infos) and q.rep == 1 and \
            k.rep == v.rep
    if ok:
        units = shapes[1][k.dim] // k.rep
        hq = shapes[0][q.dim]
        ok = units > 0 and shapes[2][v.dim] // v.rep == units and hq % units == 0 and \
            all(t.segs[0].length % units == 0 for t in infos)
    if not ok:
        walker.kill_args(node)
        return None
    b = walker.b
    u = b.new_space(units)
    for t in infos:
        b.link(t.segs[0].space, u, t.segs[0].length // units)
    out_len = hq * _shape(node)[-1]
    o = b.new_space(out_len)
    b.link(o, u, out_len // units)
    return _Info([Seg(o, out_len, None)], q.dim, hd=q.hd)
