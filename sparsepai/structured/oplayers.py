"""Layer rules of the operator-level walk (:mod:`~sparsepai.structured.opgraph`): the
producers (convolutions, linear layers and linear aliases such as ``transformers``' ``Conv1D``)
and the per-channel layers that follow their channels (norms, depthwise convolutions). Each
rule takes the walker, the node and the op's name, and returns the node's value."""

from __future__ import annotations

from torch import nn

from sparsepai.core.prunable import PRUNABLE_TYPES, is_linear_alias
from sparsepai.structured.graph import Seg
from sparsepai.structured.opvalues import _bind, _Info, _Param, _shape


def linear(wk, node, name):
    a = _bind(node)
    x, w = wk.get(a["input"]), wk.layer_weight(a["weight"], _is_layer)
    shape = _shape(node)
    if w is None:
        wk.kill_args(node)
        return None
    n_out, n_in = wk.tensors[w].shape[:2]
    if isinstance(x, _Info):
        if x.dim == len(_shape(a["input"])) - 1 and not x.dirty and x.hd is None and \
                x.length * x.factor == n_in:
            wk.b.reads.append((wk.owner(w), x.segs, n_in))
        else:
            wk.kill(x)
    mod = wk.owner(w)
    return _Info([Seg(wk.b.producer(mod, n_out), n_out, mod)], len(shape) - 1)


def addmm(wk, node, name):
    """``addmm(bias, x, weight)`` of a linear layer that stores its weight as (in, out)
    (``transformers``' ``Conv1D``): a producer of ``out`` features reading ``x``'s."""
    a = _bind(node)
    x, w, b = wk.get(a["mat1"]), wk.layer_weight(a["mat2"], is_linear_alias), wk.get(a["self"])
    mod = wk.owner(w) if w else None
    if w is None or not (isinstance(b, _Param) and b.name == f"{mod}.bias"):
        wk.kill_args(node)
        return None
    n_in, n_out = wk.tensors[w].shape
    if isinstance(x, _Info):
        if x.dim == 1 and not x.dirty and x.hd is None and x.length * x.factor == n_in:
            wk.b.reads.append((mod, x.segs, n_in))
        else:
            wk.kill(x)
    return _Info([Seg(wk.b.producer(mod, n_out), n_out, mod)], 1)


def conv(wk, node, name):
    a = _bind(node)
    x, w = wk.get(a["input"]), wk.layer_weight(a["weight"], _is_layer)
    if w is None or a.get("transposed"):
        wk.kill_args(node)
        return None
    groups = a.get("groups") or 1
    weight = wk.tensors[w]
    n_out, n_in = weight.shape[0], weight.shape[1] * groups
    ok = isinstance(x, _Info) and x.dim == 1 and x.factor == 1 and not x.dirty and \
        x.hd is None and x.length == n_in
    mod = wk.owner(w)
    if groups == 1:
        if ok:
            wk.b.reads.append((mod, x.segs, n_in))
        else:
            wk.kill(x)
        return _Info([Seg(wk.b.producer(mod, n_out), n_out, mod)], 1)
    if ok and groups == n_in == n_out:  # depthwise: each channel keeps its own filter
        tensors = [(w, 0)] + ([(wk.param(a["bias"]), 0)] if wk.param(a["bias"]) else [])
        wk.b.members.append((mod, "depthwise", x.segs, tensors, n_out))
        return x
    if ok and len(x.segs) == 1:
        return _grouped(wk, mod, x.segs[0].space, n_in, n_out, groups)
    wk.kill(x)
    return None


def _grouped(wk, mod, space, n_in, n_out, groups):
    """A grouped convolution's units. With at least two input and two output channels per
    group, consistently within its groups: unit ``i`` of the input side is input channel
    ``i`` of every group (tied to the producer of the input), unit ``j`` of the output side
    output channel ``j`` of every group; the sides are independent, every group keeps the
    same channels and slim keeps ``groups``. Otherwise (one channel per group on a side)
    whole groups, each a block of input and of output channels."""
    per_in, per_out = n_in // groups, n_out // groups
    out = wk.b.producer(mod, n_out)
    if per_in > 1 and per_out > 1:
        cols = wk.b.new_space(per_in)  # the weight's input columns
        wk.b.link(space, cols)
        wk.b.reads.append((mod, [Seg(cols, per_in, None)], per_in))
        wk.b.link(out, wk.b.new_space(per_out))
    else:
        unit = wk.b.new_space(groups)
        wk.b.link(space, unit, per_in)
        wk.b.link(out, unit, per_out)
    return _Info([Seg(out, n_out, mod)], 1)


def norm(wk, node, name):
    a = _bind(node)
    x = wk.get(a["input"])
    w, b = wk.param(a.get("weight")), wk.param(a.get("bias"))
    stats = [wk.param(a.get(k)) for k in ("running_mean", "running_var")]
    ok = isinstance(x, _Info) and x.dim == 1 and x.factor == 1 and not x.dirty and \
        x.hd is None
    if ok and name == "group_norm" and a.get("num_groups") != x.length:
        # groups of several channels mix them; with norm_streams (an approximation) the
        # same channels of every group go (unit i: channel i of every group), so that slim
        # keeps num_groups
        if wk.norm_streams and w is not None and len(x.segs) == 1:
            per = x.length // a["num_groups"]
            wk.b.link(x.segs[0].space, wk.b.new_space(per))
        else:
            w, stats = None, [True]
    if not ok or (w is None and any(stats)):
        # without affine parameters a zero channel normalised with running statistics
        # is not zero
        wk.kill_args(node)
        return None
    if w is not None:
        tensors = [(t, 0) for t in (w, b, *stats) if t]
        wk.b.members.append((wk.owner(w), "norm", x.segs, tensors, x.length))
    val = node.meta.get("val")
    return (x,) + (None,) * (len(val) - 1) if isinstance(val, (tuple, list)) else x



def layer_norm(wk, node, name):
    """A layer norm over the channel dimension (normalized_shape ``(C,)``). Its statistics
    mix the channels: removing one changes every other's output, so the channels are kept,
    unless the graph is built with ``norm_streams`` (an opt-in approximation: the norm is a
    member, its weight and bias narrowed with the channels)."""
    a = _bind(node)
    x = wk.get(a["input"])
    w, b = wk.param(a.get("weight")), wk.param(a.get("bias"))
    shape = a.get("normalized_shape")
    ok = wk.norm_streams and isinstance(x, _Info) and w is not None and \
        x.dim == len(_shape(a["input"])) - 1 and x.factor == 1 and not x.dirty and \
        x.hd is None and list(shape) == [x.length]
    if not ok:  # without a weight a zero channel normalised is not zero
        wk.kill_args(node)
        return None
    wk.b.members.append((wk.owner(w), "norm", x.segs, [(t, 0) for t in (w, b) if t],
                         x.length))
    val = node.meta.get("val")
    return (x,) + (None,) * (len(val) - 1) if isinstance(val, (tuple, list)) else x


def embedding(wk, node, name):
    """An embedding's outputs: with ``norm_streams`` a producer whose channels are the columns
    of its table (the residual stream a transformer's embeddings write); otherwise unknown
    (that stream meets a layer norm, which keeps it whole)."""
    a = _bind(node)
    w = wk.layer_weight(a["weight"], lambda m: isinstance(m, nn.Embedding) and
                        m.max_norm is None)
    mod = wk.owner(w) if w else None
    if not wk.norm_streams or w is None:
        wk.kill_args(node)
        return None
    n_out = wk.tensors[w].shape[1]
    return _Info([Seg(wk.b.producer(mod, n_out), n_out, mod)], len(_shape(node)) - 1)


def _is_layer(mod):
    return isinstance(mod, PRUNABLE_TYPES)
