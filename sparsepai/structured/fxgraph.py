"""The fallback channel graph builder: a ``torch.fx`` trace over known module types, used
when no example input is known (see :mod:`~sparsepai.structured.graph`).

A tensor with channels (dim 1 of ``(N, C, ...)``, or the features of ``(N, C)``) is described as
a list of *segments*: each segment is the whole output of one channel *space*, and a space starts
as the output channels of one convolution or linear layer (its *producer*). Walking the graph:

- channel-wise operations that map a zero channel to a zero channel (batch norm, ReLU-like
  activations, pooling, dropout, depthwise convolutions, means over spatial dims) pass the
  segments through; batch norms and depthwise convolutions are recorded as *members* whose
  per-channel parameters follow the channels;
- an elementwise sum (residual connection) *couples* the spaces of its operands: their channels
  are one stream, written by every producer that feeds it;
- concatenation along dim 1 concatenates the segment lists; flattening ``(N, C, H, W)`` into
  ``(N, C*H*W)`` keeps the segments, each channel becoming a block of ``H*W`` features of the
  next linear layer;
- convolutions (``groups == 1``) and linear layers *consume* their input segments (their input
  channels die with a pruned channel) and produce a new space;
- anything else (an unknown function or module, a grouped convolution, an activation with
  f(0) != 0 such as sigmoid, the model's input and output) makes the spaces it touches
  *unprunable*: their channels are all kept. So the classifier, whose outputs are the model's,
  is never pruned.

The result is a list of :class:`Group`: coupled spaces, their producers, members and consumers.
"""

from __future__ import annotations

import operator

import torch
from torch import nn

from sparsepai.structured.graph import Builder, ChannelGraph, Seg, TraceError, flat_args as _flat

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
# f(0) == 0 for all of these: a pruned (all-zero) channel stays zero through them
_PASS_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Hardswish, nn.Tanh, nn.Mish,
    nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d,
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
)
_NORM = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_F = torch.nn.functional
_PASS_FUNCS = {
    torch.relu, torch.relu_, _F.relu, _F.relu_, _F.relu6, _F.leaky_relu, _F.elu, _F.gelu,
    _F.silu, _F.hardswish, _F.mish, torch.tanh, _F.dropout, _F.dropout1d, _F.dropout2d,
    _F.dropout3d, torch.max_pool1d, torch.max_pool2d, torch.max_pool3d, _F.max_pool1d,
    _F.max_pool2d, _F.max_pool3d, _F.avg_pool1d, _F.avg_pool2d, _F.avg_pool3d,
    _F.adaptive_avg_pool1d, _F.adaptive_avg_pool2d, _F.adaptive_avg_pool3d,
    _F.adaptive_max_pool1d, _F.adaptive_max_pool2d, _F.adaptive_max_pool3d,
    torch.nn.functional.hardtanh,
}
_PASS_METHODS = {"relu", "relu_", "contiguous", "clone", "tanh", "gelu", "detach"}
_ADD = {operator.add, operator.iadd, torch.add}
_ADD_METHODS = {"add", "add_", "__add__", "__iadd__"}


class _Info:
    __slots__ = ("segs", "flat")

    def __init__(self, segs, flat=False):
        self.segs = tuple(segs)
        self.flat = flat

    @property
    def length(self):
        return sum(s.length for s in self.segs)


def trace(model: nn.Module):
    """``torch.fx.symbolic_trace`` with an error naming the module that cannot be traced."""
    import torch.fx as fx

    try:
        return fx.symbolic_trace(model)
    except Exception as exc:  # fx raises many types; all mean the same to the user
        culprit = _untraceable_module(model)
        where = f" (module {culprit!r}, {type(dict(model.named_modules())[culprit]).__name__})" \
            if culprit else ""
        raise TraceError(f"torch.fx cannot trace {type(model).__name__}{where}: {exc}. Pass "
                         "example_inputs= (an input batch) to capture it with torch.export "
                         "instead.") from exc


def _untraceable_module(model):
    import torch.fx as fx

    # the deepest module whose own trace fails is the one to name
    found = None
    for name, mod in model.named_modules():
        if not name or type(mod).__module__.startswith("torch.nn"):
            continue
        try:
            fx.symbolic_trace(mod)
        except Exception:
            if found is None or name.startswith(found + "."):
                found = name
    return found


def analyse_fx(model: nn.Module) -> ChannelGraph:
    """Trace ``model`` with ``torch.fx`` and find its channel groups.

    Raises:
        TraceError: naming the module fx could not trace.
    """
    gm = trace(model)
    modules = dict(model.named_modules())
    bld = Builder()
    new_space, dead = bld.new_space, bld.dead
    producer_space = bld.producer_space
    members_raw, reads_raw = bld.members, bld.reads

    def kill(info):
        if isinstance(info, _Info):
            bld.kill_segs(info.segs)

    def kill_all(args):
        for a in _flat(args):
            kill(env.get(a) if isinstance(a, torch.fx.Node) else None)

    def couple(infos):
        """Elementwise sum of channel tensors: the same channel in each is one stream."""
        infos = [i for i in infos if i is not None]
        if len(infos) < 2:
            return infos[0] if infos else None
        if any(i.flat != infos[0].flat for i in infos) or \
                not bld.couple_segs([i.segs for i in infos]):
            for i in infos:
                kill(i)
        return _Info([Seg(s.space, s.length, None) for s in infos[0].segs], infos[0].flat)

    env: dict = {}
    for node in gm.graph.nodes:
        out = None
        if node.op == "placeholder":
            out = "input"  # channels unknown, never pruned
        elif node.op == "get_attr":
            out = None
        elif node.op == "output":
            kill_all(node.args)
        elif node.op == "call_module":
            mod = modules[node.target]
            x = env.get(node.args[0]) if node.args and isinstance(node.args[0], torch.fx.Node) \
                else None
            others = node.args[1:] + tuple(node.kwargs.values())
            kill_all(others)
            info = x if isinstance(x, _Info) else None
            if isinstance(mod, _CONV) or isinstance(mod, nn.Linear):
                is_conv = isinstance(mod, _CONV)
                n_in = mod.in_channels if is_conv else mod.in_features
                n_out = mod.out_channels if is_conv else mod.out_features
                if is_conv and mod.groups != 1:
                    if (mod.groups == n_in == n_out and info is not None
                            and info.length == n_in and not info.flat):
                        members_raw.append((node.target, "depthwise", info.segs,
                                            _tensors(node.target, mod), n_in))
                        out = info
                    else:
                        kill(info)
                        out = _Info([Seg(new_space(n_out), n_out, node.target)])
                        dead.add(out.segs[0].space)
                else:
                    if info is not None:
                        # a linear layer reads features (flat), a convolution channels (dim 1)
                        ok = (info.flat and n_in % info.length == 0) if not is_conv else \
                            (not info.flat and n_in == info.length)
                        if ok:
                            reads_raw.append((node.target, info.segs, n_in))
                        else:
                            kill(info)
                    if node.target in producer_space:
                        sp = producer_space[node.target]
                    else:
                        sp = producer_space[node.target] = new_space(n_out)
                    out = _Info([Seg(sp, n_out, node.target)], flat=not is_conv)
            elif isinstance(mod, _NORM):
                if info is not None and info.length == mod.num_features and \
                        (not info.flat or isinstance(mod, nn.BatchNorm1d)):
                    members_raw.append((node.target, "norm", info.segs,
                                        _tensors(node.target, mod), mod.num_features))
                    out = info
                else:
                    kill(info)
            elif isinstance(mod, _PASS_MODULES):
                out = info
            elif isinstance(mod, nn.Flatten):
                if info is not None and mod.start_dim == 1 and mod.end_dim == -1:
                    out = _Info(info.segs, flat=True)
                else:
                    kill(info)
            else:
                kill(info)
        elif node.op in ("call_function", "call_method"):
            out = _function(node, env, kill, kill_all, couple)
        env[node] = out

    return bld.finish("fx")


def _tensors(name, mod):
    """The per-channel tensors of a norm or depthwise layer, as (full name, axis) pairs."""
    return tuple((f"{name}.{t}", 0) for t in ("weight", "bias", "running_mean", "running_var")
                 if getattr(mod, t, None) is not None)


def _arg(node, i, key, default=None):
    if len(node.args) > i:
        return node.args[i]
    return node.kwargs.get(key, default)


def _function(node, env, kill, kill_all, couple):
    """The channel description of a call_function / call_method node's output."""
    tgt = node.target
    get = (lambda a: env.get(a) if isinstance(a, torch.fx.Node) else None)
    x = get(node.args[0]) if node.args else None
    info = x if isinstance(x, _Info) else None
    is_method = node.op == "call_method"
    if (not is_method and tgt in _PASS_FUNCS) or (is_method and tgt in _PASS_METHODS):
        kill_all(node.args[1:])
        return info
    if (not is_method and tgt in _ADD) or (is_method and tgt in _ADD_METHODS):
        a, b = get(node.args[0]), get(_arg(node, 1, "other"))
        if "alpha" in node.kwargs or any(v == "input" for v in (a, b)):
            kill_all(node.args)
            return None
        if isinstance(a, _Info) and isinstance(b, _Info):
            return couple([a, b])
        if isinstance(a, _Info) and not isinstance(_arg(node, 1, "other"), torch.fx.Node):
            return a if _arg(node, 1, "other") == 0 else _killed(a, kill)
        kill_all(node.args)
        return None
    if not is_method and tgt is torch.cat:
        parts = [get(t) for t in node.args[0]]
        dim = _arg(node, 1, "dim", 0)
        if dim == 1 and all(isinstance(p, _Info) for p in parts) and \
                len({p.flat for p in parts}) == 1:
            return _Info([s for p in parts for s in p.segs], parts[0].flat)
        kill_all(node.args)
        return None
    if (not is_method and tgt is torch.flatten) or (is_method and tgt == "flatten"):
        start = _arg(node, 1, "start_dim", 0)
        end = _arg(node, 2, "end_dim", -1)
        if info is not None and start == 1 and end == -1:
            return _Info(info.segs, flat=True)
        kill_all(node.args)
        return None
    if is_method and tgt in ("view", "reshape"):
        shape = node.args[1:]
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        if info is not None and len(shape) == 2 and shape[1] == -1 and _is_batch(shape[0]):
            return _Info(info.segs, flat=True)
        kill_all(node.args)
        return None
    if (is_method and tgt in ("mean", "sum", "amax")) or \
            (not is_method and tgt in (torch.mean, torch.sum, torch.amax)):
        dims = _arg(node, 1, "dim")
        dims = (dims,) if isinstance(dims, int) else dims
        if info is not None and not info.flat and dims and all(isinstance(d, int) and d >= 2
                                                              for d in dims):
            keep = _arg(node, 2, "keepdim", False)
            return info if keep else _Info(info.segs, flat=True)
        kill_all(node.args)
        return None
    if is_method and tgt == "size" or (not is_method and tgt is getattr):
        return None
    kill_all(node.args)
    kill_all(tuple(node.kwargs.values()))
    return None


def _killed(info, kill):
    kill(info)
    return info


def _is_batch(a):
    """``x.size(0)`` or ``x.shape[0]`` (the batch dimension), as fx records it."""
    if not isinstance(a, torch.fx.Node):
        return False
    if a.op == "call_method" and a.target == "size":
        return len(a.args) > 1 and a.args[1] == 0
    if a.op == "call_function" and a.target is operator.getitem:
        return a.args[1] == 0
    return False
