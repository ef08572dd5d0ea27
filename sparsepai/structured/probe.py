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


def unfollowed(model: nn.Module, example_inputs, graph, want: list) -> list:
    """The ids of the prunable groups of ``graph`` whose narrowing ``model``'s forward does not
    follow (see the module's docstring); ``[]`` when the model does not run on the meta device.
    ``want``: the shapes of the dense model's outputs on ``example_inputs``
    (:func:`output_shapes`).
    """
    from sparsepai.structured.channels import resolve
    from sparsepai.structured.slim import narrow_model

    args, kwargs = _meta(split_inputs(example_inputs))
    groups = [g for g in graph.prunable_groups() if g.size > 1]

    def runs(gs) -> bool:
        masks = {}
        for g in gs:
            units = torch.ones(g.size, dtype=torch.bool)
            units[-1] = False
            masks.update({p: g.spread(p, units) for p in g.producers})
        try:
            new = _meta_copy(model)
            narrow_model(new, graph, resolve(graph, masks, "probe"))
            return _shapes(new, args, kwargs) == want
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
    try:
        if _shapes(_meta_copy(model), args, kwargs) != want:
            return []
    except Exception:  # data-dependent code, tensors kept outside parameters: not tried
        return []
    out = bad(groups, known=True)
    rest = [g for g in groups if g.id not in out]
    if out and rest and not runs(rest):  # groups that fail only together: all kept
        out += [g.id for g in rest]
    return out
