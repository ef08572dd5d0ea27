"""The default channel graph builder: a walk over the ATen operations of a ``torch.export``
capture (see :mod:`~sparsepai.structured.graph` for the model it fills).

Every value of the graph is described as one of: an :class:`_Info` (a tensor whose dimension
``dim`` holds the channels of some segments, each channel occupying ``factor`` consecutive
positions, e.g. after a flatten), a :class:`_Param` (a parameter or buffer, possibly viewed), a
tuple of these (an op with several outputs), or None (anything else: the model's inputs,
embeddings, tensors the walk does not follow). An :class:`_Info` is *dirty* when a pruned
channel may hold a non-zero value there (after ``sigmoid``, ``+ 3``, a softmax over space):
only a product with a clean tensor of the same channels (a gate) makes it clean again; a dirty
tensor reaching anything else kills its channels. The rules per op are in :data:`RULES` (layers
in :mod:`~sparsepai.structured.oplayers`, shapes in :mod:`~sparsepai.structured.opshape`,
attention in :mod:`~sparsepai.structured.heads`, elementwise ops here); an op without a rule
kills every channel it touches, so the model is never silently wrong.
"""

from __future__ import annotations

import math
import operator

import torch
from torch import nn

from sparsepai.structured import oplayers, opshape
from sparsepai.structured.capture import PREFIX, capture
from sparsepai.structured.graph import Builder, ChannelGraph, Seg, flat_args as _flat
from sparsepai.structured.heads import attention
from sparsepai.structured.opvalues import _Info, _Param, _bind, _norm_dim, _shape
from sparsepai.structured.probe import output_shapes, unfollowed

# f(0) == 0: a pruned (zero) channel stays zero
_PASS = {"relu", "leaky_relu", "elu", "selu", "celu", "gelu", "silu", "hardswish", "mish",
         "tanh", "softsign", "sin", "erf", "abs", "neg", "sign", "sqrt", "square", "dropout",
         "feature_dropout", "alpha_dropout", "feature_alpha_dropout", "native_dropout",
         "clone", "contiguous", "alias", "detach", "lift_fresh_copy", "_to_copy", "to",
         "type_as", "upsample_nearest1d", "upsample_nearest2d", "upsample_nearest3d",
         "upsample_bilinear2d", "upsample_bicubic2d", "upsample_linear1d",
         "upsample_trilinear3d", "_upsample_nearest_exact2d", "max_pool1d", "max_pool2d",
         "max_pool3d", "avg_pool1d", "avg_pool2d", "avg_pool3d", "adaptive_avg_pool1d",
         "adaptive_avg_pool2d", "adaptive_avg_pool3d", "adaptive_max_pool1d",
         "adaptive_max_pool2d", "adaptive_max_pool3d", "max_pool2d_with_indices",
         "max_pool3d_with_indices"}
_SPATIAL = {n for n in _PASS if "pool" in n or "upsample" in n}  # channels must be dim 1
# f(0) != 0 but channelwise: the result is dirty
_DIRTY = {"sigmoid", "hardsigmoid", "exp", "cos", "softplus", "erfc"}
_REDUCE = {"mean", "sum", "amax", "amin", "max", "min", "var", "std", "norm",
           "linalg_vector_norm", "nansum"}
# (``reshape_as``/``view_as``: the second argument gives only its shape)
_VIEW = {"view", "reshape", "_unsafe_view", "flatten", "unflatten", "squeeze", "unsqueeze",
         "reshape_as", "view_as"}
# the ops a tensor with a tiling dimension (_Info.tdim) may meet
_TILE_OK = {"permute", "transpose", "unbind", "select", "clone", "contiguous", "alias",
            "detach"}
_SHAPE_ONLY = {"sym_size", "sym_numel", "sym_stride", "sym_storage_offset", "size", "dim",
               "_assert_tensor_metadata", "_assert_scalar", "_assert_async", "empty_like",
               "zeros_like", "ones_like", "full_like", "new_zeros", "new_ones", "new_empty",
               "new_full", "_local_scalar_dense", "item"}


def _normaliser(node, inverse=False) -> bool:
    """Whether ``node`` (a statistic, plus constants added to it) only ever scales tensors:
    divides them (through a ``sqrt`` too) or, after an ``rsqrt`` (``inverse``), multiplies them
    (an RMS norm's ``x * rsqrt(mean(x**2) + eps)``)."""
    for u in node.users:
        name = getattr(u.target, "__name__", "")
        ops = [a for a in u.args[:2] if a is node]
        if name.startswith("add") and len(u.args) == 2 and u.args[0] is node and \
                not isinstance(u.args[1], torch.fx.Node):
            ok = _normaliser(u, inverse)
        elif name.startswith(("sqrt", "rsqrt")) and not inverse:
            ok = _normaliser(u, name.startswith("rsqrt"))
        elif inverse:
            ok = name.startswith("mul") and len(u.args) == 2 and len(ops) == 1
        else:
            ok = name.startswith("div") and len(u.args) == 2 and u.args[1] is node and \
                u.args[0] is not node
        if not ok:
            return False
    return True


def analyse_export(model: nn.Module, example_inputs, norm_streams: bool = False) -> ChannelGraph:
    """Capture ``model`` on ``example_inputs`` with ``torch.export`` and find its channel groups.

    ``norm_streams``: also prune channels whose only obstacle is a layer or group norm over
    them (see :func:`~sparsepai.structured.graph.analyse`).

    Raises:
        TraceError: naming the module export could not capture.
    """
    ep = capture(model, example_inputs)
    graph = _Walker(model, ep, norm_streams).run()
    graph.norm_streams = bool(norm_streams)  # the builder does not know the option
    for gid in unfollowed(model, example_inputs, graph, output_shapes(ep)):  # forwards that recompute widths
        graph.groups[gid].prunable = False
    return graph


class _Walker:
    def __init__(self, model, ep, norm_streams=False):
        self.b = Builder()
        self.norm_streams = bool(norm_streams)
        self.ep = ep
        self.mods = dict(model.named_modules())
        self.tensors = dict(model.state_dict(keep_vars=True))
        self.tensors.update(dict(model.named_parameters()))
        shared: dict = {}  # a tied parameter has one name per module that holds it
        for n, p in model.named_parameters(remove_duplicate=False):
            shared.setdefault(id(p), []).append(n)
        self.aliases = {n: names for names in shared.values() for n in names}
        sig = ep.graph_signature
        self.names = {k: v[len(PREFIX):] for k, v in {**sig.inputs_to_parameters,
                                                      **sig.inputs_to_buffers}.items()}
        self.env: dict = {}

    # -- helpers -----------------------------------------------------------------------------
    def get(self, a):
        return self.env.get(a) if isinstance(a, torch.fx.Node) else None

    def kill(self, v):
        if isinstance(v, _Info):
            self.b.kill_segs(v.segs)
        elif isinstance(v, tuple):
            for x in v:
                self.kill(x)

    def kill_args(self, node):
        for a in _flat(tuple(node.args) + tuple(node.kwargs.values())):
            self.kill(self.get(a))

    def owner(self, pname):
        return pname.rsplit(".", 1)[0] if "." in pname else ""

    def param_axis(self, a, dim, rank, length):
        """``(name, axis)`` when node ``a`` is a parameter, or an expand of one, whose axis
        ``axis`` lies along dimension ``dim`` (of ``length`` channels) of a rank-``rank``
        result (a position embedding added, a class token concatenated); else None."""
        while isinstance(a, torch.fx.Node) and a.op == "call_function" and \
                getattr(a.target, "__name__", "").startswith("expand"):
            a = a.args[0]
        if not (isinstance(a, torch.fx.Node) and a.op == "placeholder"):
            return None
        v = self.get(a)
        if not isinstance(v, _Param):
            return None
        t = self.tensors[v.name]
        axis = dim - (rank - t.dim())
        return (v.name, axis) if 0 <= axis < t.dim() and t.shape[axis] == length else None

    def layer_weight(self, a, accept):
        """The name of node ``a``'s parameter as the ``weight`` of a module ``accept`` takes
        (a tied parameter, e.g. a language model head's and its embedding's, has several);
        None if it is none."""
        v = self.get(a)
        if not isinstance(v, _Param):
            return None
        return next((n for n in self.aliases.get(v.name, [v.name])
                     if n.endswith(".weight") and accept(self.mods.get(self.owner(n)))), None)

    def param(self, a):
        v = self.get(a)
        return v.name if isinstance(v, _Param) else None

    # -- the walk ----------------------------------------------------------------------------
    def run(self) -> ChannelGraph:
        for node in self.ep.graph.nodes:
            if node.op == "placeholder":
                name = self.names.get(node.name)
                out = _Param(name) if name is not None else None
            elif node.op == "output":
                self.kill_args(node)
                out = None
            elif node.op == "call_function" and node.target is operator.getitem:
                v = self.get(node.args[0])
                out = v[node.args[1]] if isinstance(v, tuple) else None
            elif node.op == "call_function" and isinstance(node.target, torch._ops.OpOverload):
                name = node.target.overloadpacket.__name__
                inplace = name.endswith("_") and not name.startswith("_")
                base = name[:-1] if inplace else name
                out = self.op(node, base)
                if inplace and node.args and isinstance(node.args[0], torch.fx.Node):
                    self.env[node.args[0]] = out
            else:
                self.kill_args(node)
                out = None
            self.env[node] = out
        return self.b.finish("export")

    def op(self, node, name):
        if name not in _TILE_OK and any(isinstance(self.get(a), _Info) and
                                        self.get(a).tdim is not None for a in _flat(node.args)):
            self.kill_args(node)
            return None
        rule = RULES.get(name)
        if rule is not None:
            return rule(self, node, name)
        if name in _SHAPE_ONLY:
            return None
        x = self.get(node.args[0]) if node.args else None
        if name in _PASS or name in _DIRTY:
            # type_as's second argument gives only its dtype
            rest = [self.get(a) for a in _flat(node.args[1:])] if name != "type_as" else []
            if not isinstance(x, _Info) or any(isinstance(r, _Info) for r in rest):
                self.kill_args(node)
                return _Param(x.name) if isinstance(x, _Param) and name in _PASS else None
            if name in _SPATIAL and (x.dim != 1 or x.factor != 1 or x.hd is not None):
                self.kill_args(node)
                return None
            out = x.but(dirty=x.dirty or name in _DIRTY)
            val = node.meta.get("val")
            return (out,) + (None,) * (len(val) - 1) if isinstance(val, (tuple, list)) else out
        if name in _VIEW:
            return opshape.view(self, node)
        self.kill_args(node)
        return None

    # -- rules -------------------------------------------------------------------------------
    def binary(self, node, name, ops=None, infos=None):
        """``ops``/``infos``: the operands and their values when not the node's first two
        arguments (an operand may be ``node`` itself, standing for a part already computed)."""
        ops = list(node.args[:2]) if ops is None else ops
        infos = [self.get(a) for a in ops] if infos is None else infos
        out_shape = _shape(node)
        if out_shape is None:
            self.kill_args(node)
            return None
        R = len(out_shape)
        live = [(i, v) for i, v in enumerate(infos) if isinstance(v, _Info)]
        if not live:
            return None
        dims = {v.dim + R - len(_shape(ops[i])) for i, v in live}
        facs = {v.factor for _, v in live}
        heads = {(None if v.hd is None else v.hd + R - len(_shape(ops[i])), v.rep, v.pend)
                 for i, v in live}
        if len(dims) != 1 or len(facs) != 1 or len(heads) != 1 or \
                any(v.pend is not None or (v.hd is not None and R != len(_shape(ops[i])))
                    for i, v in live):
            self.kill_args(node)
            return None
        od, (fac,) = dims.pop(), facs
        first = live[0][1]
        dirty = [v.dirty for _, v in live]
        scales = []
        other_zero = []  # for each non-Info operand: is it 0 where a pruned channel is?
        for i, a in enumerate(ops):
            if isinstance(infos[i], _Info):
                continue
            shp = _shape(a) if isinstance(a, torch.fx.Node) else ()
            shp = (1,) * (R - len(shp)) + tuple(shp)
            if shp[od] == 1:
                other_zero.append(not isinstance(a, torch.fx.Node) and a == 0)
            elif isinstance(infos[i], _Param) and fac == 1 and first.hd is None and \
                    math.prod(shp) == shp[od] == first.length:
                t = self.tensors[infos[i].name]
                scales.append((infos[i].name, max(range(t.dim()), key=lambda k: t.shape[k])))
                other_zero.append(True)  # masked with its channels
            elif fac == 1 and first.hd is None and self.param_axis(a, od, R, first.length):
                scales.append(self.param_axis(a, od, R, first.length))  # e.g. positions
                other_zero.append(True)
            else:
                self.kill_args(node)
                return None
        segs = first.segs
        if len(live) > 1:
            if not self.b.couple_segs([v.segs for _, v in live]):
                self.kill_args(node)
                return None
            segs = [Seg(s.space, s.length, None) for s in segs]
        if name == "mul":
            clean = not all(dirty) or bool(scales)
        elif name == "div":
            num, den = infos[0], infos[1]
            if scales or (isinstance(den, _Info) and (not den.dirty or not isinstance(num, _Info)
                                                      or num.dirty)):
                self.kill_args(node)  # a pruned channel would divide by zero
                return None
            clean = not num.dirty
        else:  # add, sub, rsub, maximum, minimum
            clean = not any(dirty) and all(other_zero)
        for t in scales:
            self.b.members.append((self.owner(t[0]), "scale", segs, [t], first.length))
        return first.but(segs=segs, dim=od, dirty=not clean)

    def addcmul(self, node, name):
        """``self + value * tensor1 * tensor2`` (GRN's ``bias + weight * (x * nx)``)."""
        a = _bind(node)
        prod = self.binary(node, "mul", [a["tensor1"], a["tensor2"]])
        return self.binary(node, "add", [a["self"], node], [self.get(a["self"]), prod])

    def clamp(self, node, name):
        a = _bind(node)
        x = self.get(node.args[0])
        lo = a.get("min", a.get("min_val"))
        hi = a.get("max", a.get("max_val"))
        if not isinstance(x, _Info) or isinstance(lo, torch.fx.Node) or \
                isinstance(hi, torch.fx.Node):
            self.kill_args(node)
            return None
        keeps = (lo is None or lo <= 0) and (hi is None or hi >= 0)
        return x.but(dirty=x.dirty or not keeps)

    def pow(self, node, name):
        x, e = self.get(node.args[0]), node.args[1] if len(node.args) > 1 else None
        if isinstance(x, _Info) and isinstance(e, (int, float)) and e > 0:
            return x
        self.kill_args(node)
        return None

    def softmax(self, node, name):
        x = self.get(node.args[0])
        if not isinstance(x, _Info) or _norm_dim(node.args[1], len(_shape(node))) == x.dim:
            self.kill_args(node)
            return None
        return x.but(dirty=True)

    def reduce(self, node, name):
        a = _bind(node)
        x = self.get(node.args[0])
        dims = a.get("dim")
        if not isinstance(x, _Info) or dims is None or x.hd is not None:
            self.kill_args(node)
            return None
        R = len(_shape(node.args[0]))
        dims = [_norm_dim(d, R) for d in ([dims] if isinstance(dims, int) else dims)]
        if dims and x.dim in dims and self.norm_streams and name == "mean" and \
                a.get("keepdim") and not x.dirty and _normaliser(node):
            return None  # a normalising statistic (GRN's mean response, RMS): norm_streams
        if not dims or x.dim in dims:
            self.kill_args(node)
            return None
        out = x if a.get("keepdim") else x.but(dim=x.dim - sum(d < x.dim for d in dims))
        return (out, None) if isinstance(node.meta.get("val"), (tuple, list)) else out


RULES = {
    "linear": oplayers.linear,
    "addmm": oplayers.addmm,
    **{k: oplayers.conv for k in ("conv1d", "conv2d", "conv3d", "convolution", "_convolution")},
    **{k: oplayers.norm for k in ("batch_norm", "native_batch_norm", "_native_batch_norm_legit",
                                 "_native_batch_norm_legit_no_training", "instance_norm",
                                 "group_norm")},
    **{k: _Walker.binary for k in ("add", "sub", "rsub", "mul", "div", "maximum", "minimum")},
    "addcmul": _Walker.addcmul,
    **{k: _Walker.clamp for k in ("clamp", "clamp_min", "clamp_max", "hardtanh")},
    "pow": _Walker.pow,
    **{k: _Walker.softmax for k in ("softmax", "_softmax", "log_softmax", "_log_softmax")},
    **{k: _Walker.reduce for k in _REDUCE},
    **{k: opshape.permute for k in ("permute", "transpose", "t")},
    **{k: opshape.expand for k in ("expand", "expand_as")},
    **{k: opshape.index_like for k in ("select", "slice", "narrow")},
    **{k: opshape.pad for k in ("constant_pad_nd", "pad")},
    **{k: opshape.cat for k in ("cat", "stack")},
    **{k: opshape.split for k in ("split", "split_with_sizes", "chunk", "unbind",
                                  "tensor_split")},
    "embedding": oplayers.embedding,
    **{k: oplayers.layer_norm for k in ("layer_norm", "native_layer_norm", "rms_norm")},
}


def _attention(walker, node, name):
    return attention(walker, node)


RULES["scaled_dot_product_attention"] = _attention
