"""Unstructured-sparse linear layer: ``sparse_linear``.

``y = x W^T + b`` with ``W`` stored compressed (:func:`sparsepai.ops.sparse_conv.sparse_layout`
of its keep-mask): the op ``sparsepai::sparse_linear`` (schema in csrc/ops.cpp), CPU kernel
csrc/cpu/sparse_conv.cpp (the token-major input is transposed once per call so that one kept
weight is one contiguous run over the tokens), oracle
:func:`sparsepai.ops.sparse_conv_ref.sparse_linear_ref`.
"""

from __future__ import annotations

import torch

from sparsepai._ext import has_extension
from sparsepai.ops import dispatch
from sparsepai.ops.sparse_conv import SparseLayout
from sparsepai.ops.sparse_conv_ref import sparse_linear_ref

_OP = "sparsepai::sparse_linear"


def sparse_linear(x: torch.Tensor, values: torch.Tensor, layout: SparseLayout, bias,
                  in_features: int) -> torch.Tensor:
    """Linear layer with a compressed sparse weight.

    Args:
        x: ``(..., in_features)``, float32 or float64.
        values: the kept weights ``(nnz,)`` in the layout's order.
        layout: :func:`sparsepai.ops.sparse_conv.sparse_layout` of the ``(out, in)`` keep-mask.
        bias: ``(out,)`` or None.
        in_features: the dense weight's input features.

    Returns:
        ``(..., out)``, equal to ``linear`` with the masked dense weight; differentiable in
        ``x``, ``values`` and ``bias``.
    """
    args = (x, values, layout.row_ptr, layout.col, layout.t_ptr, layout.t_idx, bias,
            int(in_features))
    if dispatch.backend("sparse_linear", x.device.type) != "reference":
        return torch.ops.sparsepai.sparse_linear.default(*args)
    return sparse_linear_ref(*args)


def _setup_context(ctx, inputs, output):
    x, values, row_ptr, col, t_ptr, t_idx, bias, in_features = inputs
    ctx.save_for_backward(x, values, row_ptr, col, t_ptr, t_idx)
    ctx.in_features = in_features
    ctx.has_bias = bias is not None


def _backward(ctx, grad):
    x, values, row_ptr, col, t_ptr, t_idx = ctx.saved_tensors
    mask = [ctx.needs_input_grad[0], ctx.needs_input_grad[1],
            ctx.has_bias and ctx.needs_input_grad[6]]
    gx, gv, gb = torch.ops.sparsepai.sparse_linear_backward.default(
        grad, x, values, row_ptr, col, t_ptr, t_idx, ctx.in_features, mask)
    return (gx if mask[0] else None, gv if mask[1] else None, None, None, None, None,
            gb if mask[2] else None, None)


def _register():
    if not has_extension() or not hasattr(torch.ops.sparsepai, "sparse_linear"):
        return False

    @torch.library.register_fake(_OP)
    def _(x, values, row_ptr, col, t_ptr, t_idx, bias, in_features):
        torch._check(x.shape[-1] == in_features)
        return x.new_empty((*x.shape[:-1], row_ptr.shape[0] - 1))

    @torch.library.register_fake(_OP + "_backward")
    def _(grad, x, values, row_ptr, col, t_ptr, t_idx, in_features, mask):
        return (x.new_empty(x.shape) if mask[0] else None,
                values.new_empty(values.shape) if mask[1] else None,
                values.new_empty((row_ptr.shape[0] - 1,)) if mask[2] else None)

    torch.library.register_autograd(_OP, _backward, setup_context=_setup_context)
    return True


_register()
