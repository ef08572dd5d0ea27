"""Checking that a model's forward follows narrower layers, before any channel is pruned.

The operator-level graph sees a capture on one input, where every size is a number: it cannot
tell whether the forward computes a reshape's sizes from the width slim narrows (a head
count and the projection's width) or from another (a head size taken as the *input's* width
divided by the head count, as timm's CaiT class attention does). A slim model of the second
kind would fail at run time. So after the walk, the graph is tried: a copy of the model on the
``meta`` device (shapes only, no data, no arithmetic) is narrowed by one unit in every prunable
group, as :func:`~sparsepai.structured.slim.slim` would, and run on the example input; the
groups whose narrowing makes it fail, or change its outputs' shapes, are found by bisection and
made unprunable. A model that does not run on the meta device is not tried (its graph is kept as
the walk built it).
"""

from __future__ import annotations

import copy
import itertools

import torch
from torch import nn

from sparsepai.structured.capture import _tensors, split_inputs
from sparsepai.structured.channels import resolve
from sparsepai.structured.heads import HEAD_ATTRS
from sparsepai.structured.narrow import narrow_model


def _meta(x):
    """``x`` (nested tuples, lists, dicts) with every tensor on the meta device."""
    if isinstance(x, torch.Tensor):
        return x.to("meta")
    if isinstance(x, (tuple, list)):
        return type(x)(_meta(v) for v in x)
    if isinstance(x, dict):
        return {k: _meta(v) for k, v in x.items()}
    return x


def _meta_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` whose parameters and buffers live on the meta device (the copy
    allocates no storage for them)."""
    memo: dict = {}
    for t in itertools.chain(model.parameters(), model.buffers()):
        e = torch.empty_like(t, device="meta")
        memo[id(t)] = nn.Parameter(e, t.requires_grad) if isinstance(t, nn.Parameter) else e
    return copy.deepcopy(model, memo)


def _shapes(model, args, kwargs):
    with torch.no_grad():
        return [tuple(t.shape) for t in _tensors(model(*args, **kwargs))]


def output_shapes(ep) -> list:
    """The shapes of the outputs of a capture (see :func:`~sparsepai.structured.capture.capture`
    for how a model's outputs are flattened)."""
    (out,) = [n for n in ep.graph.nodes if n.op == "output"]
    return [tuple(int(d) for d in n.meta["val"].shape) for n in out.args[0]]


def _narrowed(model, graph, groups):
    """A meta copy of ``model`` with the last unit of every group of ``groups`` pruned."""
    masks = {}
    for g in groups:
        units = torch.ones(g.size, dtype=torch.bool)
        units[-1] = False
        masks.update({p: g.spread(p, units) for p in g.producers})
    new = _meta_copy(model)
    narrow_model(new, graph, resolve(graph, masks, "probe"))
    return new


def _owner(graph, g, mods) -> str:
    """For a group of attention heads: the module whose forward holds all of its narrowing
    (the nearest common ancestor of its projections and of the module keeping the head
    count); "" (the model) for any other group."""
    if not g.expand or any(isinstance(mods[p], nn.modules.conv._ConvNd) for p in g.producers):
        return ""
    names = [n.split(".") for n in g.producers + [r.module for r in graph.reads
                                                  if r.group == g.id]]
    common = []
    for parts in zip(*(n[:-1] for n in names)):
        if len(set(parts)) != 1:
            break
        common.append(parts[0])
    first = names[0][:-1]
    for i in range(len(first), -1, -1):  # slim updates the nearest holder of a head count
        if any(isinstance(getattr(mods[".".join(first[:i])], a, None), int) for a in HEAD_ATTRS):
            return ".".join(first[:min(i, len(common))])
    return ".".join(common)


def unfollowed(model: nn.Module, example_inputs, graph, want: list) -> list:
    """The ids of the prunable groups of ``graph`` whose narrowing ``model``'s forward does not
    follow (see the module's docstring); ``[]`` when the model does not run on the meta device.
    ``want``: the shapes of the dense model's outputs on ``example_inputs``
    (:func:`output_shapes`).

    One narrowed run when every group is followed. Otherwise the groups of attention heads
    are tried first, each attention module alone on the inputs it had in the dense run (its
    heads' narrowing stays inside it); the other failures are found by bisection.
    """
    args, kwargs = _meta(split_inputs(example_inputs))
    groups = [g for g in graph.prunable_groups() if g.size > 1]

    def runs(gs) -> bool:
        try:
            return _shapes(_narrowed(model, graph, gs), args, kwargs) == want
        except Exception:  # any failure is the forward not following the narrowed widths
            return False

    def bad(gs, known=False) -> list:
        """The groups of ``gs`` (which fail together when ``known``) that fail alone."""
        if not gs or (not known and runs(gs)):
            return []
        if len(gs) == 1:
            return [g.id for g in gs]
        half = len(gs) // 2
        return bad(gs[:half]) + bad(gs[half:])

    if not groups or runs(groups):  # the common case: one narrowed run
        return []
    mods = dict(model.named_modules())
    owners: dict = {}
    for g in groups:
        owners.setdefault(_owner(graph, g, mods), []).append(g)
    heads = {o: gs for o, gs in owners.items() if o}
    dense = _meta_copy(model)
    seen: dict = {}  # attention module -> (args, kwargs, output shapes) of its first call

    def hooks(name):
        def pre(mod, a, k):
            seen.setdefault(name, [a, k, None])

        def post(mod, a, k, out):
            if seen[name][2] is None:
                seen[name][2] = [tuple(t.shape) for t in _tensors(out)]
        return pre, post

    for name in heads:
        pre, post = hooks(name)
        dense.get_submodule(name).register_forward_pre_hook(pre, with_kwargs=True)
        dense.get_submodule(name).register_forward_hook(post, with_kwargs=True)
    try:
        if _shapes(dense, args, kwargs) != want:
            return []
    except Exception:  # data-dependent code, tensors kept outside parameters: not tried
        return []
    out = []
    if heads:
        new = _narrowed(model, graph, [g for gs in heads.values() for g in gs])
        for name, gs in heads.items():
            if name not in seen:
                continue  # never called: left to the whole-model runs
            a, k, shapes = seen[name]
            try:
                with torch.no_grad():
                    ok = [tuple(t.shape) for t in _tensors(new.get_submodule(name)(*a, **k))] \
                        == shapes
            except Exception:
                ok = False
            if not ok:
                out += [g.id for g in gs]
    rest = [g for g in groups if g.id not in out]
    if not out or not runs(rest):
        out += bad(rest, known=True)
        rest = [g for g in groups if g.id not in out]
        if rest and not runs(rest):  # groups that fail only together: all kept
            out += [g.id for g in rest]
    return out
