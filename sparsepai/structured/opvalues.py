"""How the operator-level walk describes values (shared by :mod:`~sparsepai.structured.opgraph`
and its rule modules :mod:`~sparsepai.structured.oplayers`, :mod:`~sparsepai.structured.opshape`
and :mod:`~sparsepai.structured.heads`): an :class:`_Info` for a tensor that carries channels, a
:class:`_Param` for a parameter or buffer, and small readers of an ATen node's arguments."""

from __future__ import annotations

import torch


class _Info:
    """Channels along ``dim``; after an attention head split (``(B, T, H*D) -> (B, H, T, D)``)
    ``dim`` holds the heads and ``hd`` the features of a head. ``rep``: each head repeated
    that many times along ``dim`` (grouped-query attention's ``repeat_kv``); ``pend``: a dim
    that an expand made to repeat the heads, not yet merged into ``dim``; ``tdim``: a dim
    that tiles the channels (the query/key/value of a fused projection, ``(B, T, 3, H, D)``),
    which only a permute, an unbind or a select may meet."""

    __slots__ = ("segs", "dim", "factor", "dirty", "hd", "rep", "pend", "tdim")

    def __init__(self, segs, dim, factor=1, dirty=False, hd=None, rep=1, pend=None, tdim=None):
        self.segs, self.dim, self.factor, self.dirty = tuple(segs), dim, factor, dirty
        self.hd, self.rep, self.pend, self.tdim = hd, rep, pend, tdim

    @property
    def length(self):
        return sum(s.length for s in self.segs)

    @property
    def layout(self):
        return (self.dim, self.factor, self.hd, self.rep, self.pend)

    def but(self, **kw):
        d = {k: getattr(self, k) for k in self.__slots__}
        d.update(kw)
        return _Info(**d)


class _Param:
    __slots__ = ("name",)

    def __init__(self, name):
        self.name = name


def _shape(a):
    v = a.meta.get("val") if isinstance(a, torch.fx.Node) else None
    return tuple(int(s) for s in v.shape) if isinstance(v, torch.Tensor) else None


def _bind(node) -> dict:
    """The op's arguments by schema name, defaults filled in."""
    out = {}
    for i, a in enumerate(node.target._schema.arguments):
        if i < len(node.args):
            out[a.name] = node.args[i]
        elif a.name in node.kwargs:
            out[a.name] = node.kwargs[a.name]
        else:
            out[a.name] = a.default_value if a.has_default_value() else None
    return out


def _norm_dim(d, rank):
    return d + rank if d < 0 else d
