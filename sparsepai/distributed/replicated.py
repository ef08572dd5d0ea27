"""Replicated models under ``group=``: gradients averaged over the ranks, as DDP would.

Every method computes its gradients on a private copy of the model
(``sparsepai.core.model.private_copy``, which runs :func:`sync_gradients_of` on it: registered
below). Inside :func:`averaging` that copy is wrapped so that every parameter enters
the forward pass through :class:`_SyncGrad`: the identity forward, and a backward that averages
the incoming gradient over the group (:class:`_AllMean`, itself differentiable to any order).
So every gradient a method asks for (``torch.autograd.grad`` or ``backward``, once or through
``create_graph``) is the gradient of the mean of the ranks' losses: with mean-reduced losses
and equal batch sizes, the gradient one process gets on the concatenation of all ranks'
batches. That covers, with no change to the methods:

- SNIP / FORCE / AutoSparse: dL/dw averaged per batch;
- GraSP: g averaged, then Hg = mean over ranks of H_r g (the create_graph gradient is averaged
  differentiably, so the Hessian-gradient product is too);
- ProsPr: the inner SGD steps use averaged gradients (first-order: ``backward`` then SGD, as DDP
  training does; full: the inner gradients are averaged inside the differentiated graph, and the
  meta-gradient's backward averages through them again).

Each averaged gradient is one all-reduce of that parameter's gradient (the backward passes run in
the same order on every rank, so the collectives pair up). Norm layers in train mode use each
rank's own batch statistics, as DDP does without ``SyncBatchNorm``.
"""

from __future__ import annotations

import contextlib
import contextvars

import torch

from sparsepai.core.model import register_copy_hook

_GROUP: contextvars.ContextVar = contextvars.ContextVar("sparsepai_replicated_group", default=None)


class _AllMean(torch.autograd.Function):
    """Mean over the group's ranks; its backward is the same mean (of the ranks' cotangents),
    which is the derivative for a value every rank holds a copy of."""

    @staticmethod
    def forward(ctx, x, group):
        import torch.distributed as dist

        ctx.group = group
        out = x.detach().clone(memory_format=torch.contiguous_format)
        dist.all_reduce(out, group=group)
        return out.div_(dist.get_world_size(group))

    @staticmethod
    def backward(ctx, g):
        return _AllMean.apply(g, ctx.group), None


class _SyncGrad(torch.autograd.Function):
    """Identity forward; the gradient flowing back into the parameter is averaged over ranks."""

    @staticmethod
    def forward(ctx, w, group):
        ctx.group = group
        return w.view_as(w)

    @staticmethod
    def backward(ctx, g):
        return _AllMean.apply(g, ctx.group), None


@contextlib.contextmanager
def averaging(group):
    """Within this block, private copies made for scoring average their gradients over ``group``."""
    token = _GROUP.set(group)
    try:
        yield
    finally:
        _GROUP.reset(token)


_MARK = "_sparsepai_synced_group"


def sync_gradients_of(model: torch.nn.Module) -> torch.nn.Module:
    """Called on every private copy: outside :func:`averaging` it returns ``model`` untouched;
    inside, every call of ``model`` (also through ``torch.func.functional_call``) runs with each
    parameter passed through :class:`_SyncGrad` (tied parameters once).

    Hooks, not a wrapped ``forward``: they receive the module, so a deep copy of a synced copy
    (AutoSparse copies it again) syncs its own parameters; the mark keeps it from syncing twice.
    """
    group = _GROUP.get()
    if group is None or getattr(model, _MARK, False):
        return model

    def enter(module, args):
        from torch.nn.utils.stateless import _reparametrize_module

        synced: dict = {}
        values = {}
        # the tensors in place now: the parameters, or what functional_call swapped in
        for n, t in module.named_parameters(remove_duplicate=False):
            if id(t) not in synced:
                synced[id(t)] = _SyncGrad.apply(t, group) if t.requires_grad else t
            values[n] = synced[id(t)]
        ctx = _reparametrize_module(module, values)
        ctx.__enter__()
        module._sparsepai_sync_stack.append(ctx)

    def leave(module, args, output):
        module._sparsepai_sync_stack.pop().__exit__(None, None, None)

    model._sparsepai_sync_stack = []
    model.register_forward_pre_hook(enter)
    model.register_forward_hook(leave, always_call=True)
    setattr(model, _MARK, True)
    return model


register_copy_hook(sync_gradients_of, needs_copy=lambda: _GROUP.get() is not None)
