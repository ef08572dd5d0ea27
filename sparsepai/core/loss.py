"""The loss on a batch and its gradients: one function, :func:`loss_grads`, makes the gradients
of every gradient-based method (SNIP, GraSP, FORCE, ProsPr, the after-training baselines'
scores), so that a change of how gradients are made is one edit.

Gradients of FSDP2-sharded parameters (``DTensor``s) are taken by the function
``sparsepai.distributed`` registers with :func:`register_sharded_grads` (this module imports
nothing of it)."""

from __future__ import annotations

from typing import Callable

import torch

from sparsepai.core.model import model_logits

# the function taking dL/dw for sharded parameters: ``fn(loss, wrt) -> [gradients]``
_SHARDED_GRADS: list = []


def register_sharded_grads(fn: Callable) -> None:
    """Take gradients of sharded parameters (tensors with ``to_local``) with
    ``fn(loss, wrt) -> [gradient per tensor]`` (``sparsepai.distributed.sharded`` registers its
    ``backward_grads``)."""
    _SHARDED_GRADS[:] = [fn]


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The default loss: ``torch.nn.functional.cross_entropy`` (mean), with the class dimension
    second as torch has it, or last for sequence logits (B, T, classes) with targets (B, T)."""
    f = torch.nn.functional.cross_entropy
    if (logits.dim() > 2 and targets.shape == logits.shape[:-1]
            and targets.shape != logits.shape[:1] + logits.shape[2:]):
        return f(logits.flatten(0, -2), targets.flatten())
    return f(logits, targets)


def default_loss(loss_fn):
    """``loss_fn`` or :func:`cross_entropy`; either is called as ``loss_fn(logits, targets)``."""
    return loss_fn if loss_fn is not None else cross_entropy


def check_finite(loss: torch.Tensor, what: str):
    if not bool(torch.isfinite(loss)):
        raise FloatingPointError(f"{what}: the loss is {loss.item()}; lower the learning rate or "
                                 "check the data")


def batch_loss(model, batch, loss_fn, what: str, state: dict | None = None) -> torch.Tensor:
    """``loss_fn(logits, targets)`` for one ``(inputs, targets)`` batch (see
    :func:`~sparsepai.core.model.call` for ``state``); a non-finite loss raises
    ``FloatingPointError`` naming ``what``."""
    x, y = batch
    loss = loss_fn(model_logits(model, x, state), y)
    if not (isinstance(loss, torch.Tensor) and loss.numel() == 1):
        raise ValueError(f"{what}: loss_fn must return a scalar tensor, got "
                         f"{type(loss).__name__} {getattr(loss, 'shape', '')}")
    check_finite(loss, what)
    return loss


def loss_grads(model, wrt, batch, loss_fn, what: str, *, state: dict | None = None,
               create_graph: bool = False) -> list:
    """The gradients of :func:`batch_loss` with respect to the tensors ``wrt`` (zeros for a
    tensor the loss does not depend on); ``create_graph`` to differentiate them again."""
    wrt = list(wrt)
    loss = batch_loss(model, batch, loss_fn, what, state)
    if any(hasattr(t, "to_local") for t in wrt):  # FSDP2-sharded parameters (DTensors)
        if create_graph or state is not None:
            raise ValueError(f"{what}: gradients of FSDP2-sharded parameters cannot be "
                             "differentiated again nor taken under replaced parameters")
        if not _SHARDED_GRADS:
            raise RuntimeError(f"{what}: FSDP2-sharded parameters need sparsepai.distributed "
                               "(call through sp.score/sp.prune, or import sparsepai.distributed)")
        return _SHARDED_GRADS[0](loss, wrt)
    return list(torch.autograd.grad(loss, wrt, create_graph=create_graph,
                                    materialize_grads=True))


def summed_grads(model, names, batches, loss_fn, what: str) -> dict:
    """Sum over ``batches`` of dL/dw for the named weights (the model's own parameters). The
    first batch's gradients are the sum's buffers (one full-size copy for one batch)."""
    params = dict(model.named_parameters())
    total: dict = {}
    for b in batches:
        for n, g in zip(names, loss_grads(model, [params[n] for n in names], b, loss_fn, what)):
            if n in total:
                total[n] += g
            else:
                total[n] = g
    return total
