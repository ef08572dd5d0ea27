"""Unstructured-sparse 2-d convolution: ``sparse_conv2d``, and the compressed weight layout.

The weight is stored compressed (CSR by output channel, built once from the mask by
:func:`sparse_layout`): only the kept weights are stored and computed, forward and backward, and
the weight gradient is computed at the kept positions only. The op is
``sparsepai::sparse_conv2d`` (schema in csrc/ops.cpp); CPU kernel csrc/cpu/sparse_conv.cpp over
the torch-free core csrc/core/sparse_conv.h; no CUDA kernel (a CUDA layer stays a masked dense
layer, see :func:`sparsepai.sparse.sparsify`); the oracle is
:func:`sparsepai.ops.sparse_conv_ref.sparse_conv2d_ref`. The dispatch table
(sparsepai/ops/dispatch.py) chooses.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from sparsepai._ext import has_extension
from sparsepai.ops import dispatch
from sparsepai.ops.sparse_conv_ref import sparse_conv2d_ref

_OP = "sparsepai::sparse_conv2d"


class SparseLayout(NamedTuple):
    """A compressed weight: CSR by output row and its transpose (CSC by input channel).

    The kernels take each row in the order of tap ``kh * KW + kw``, then input channel (a linear
    layer: by input feature), and the transpose's positions increasing within each input
    channel; they refuse other orders. :func:`sparse_layout` builds this order.

    Attributes:
        row_ptr: int64 ``(rows + 1,)``.
        col: int32 ``(nnz,)``: the flat index of the kept weight within its row, i.e.
            ``ic * KH * KW + kh * KW + kw`` (a linear layer: the input feature).
        t_ptr: int64 ``(in_channels + 1,)``.
        t_idx: int32 ``(nnz,)``: positions in the CSR arrays, grouped by input channel.
        index: int64 ``(nnz,)``: the flat index of each kept weight in the dense weight (to
            gather values from it and scatter them back).
    """

    row_ptr: torch.Tensor
    col: torch.Tensor
    t_ptr: torch.Tensor
    t_idx: torch.Tensor
    index: torch.Tensor


def sparse_layout(mask: torch.Tensor) -> SparseLayout:
    """The compressed layout of a keep-mask ``(O, C, KH, KW)`` or ``(O, C)``.

    Example:
        >>> lay = sparse_layout(torch.rand(8, 4, 3, 3) > 0.9)
        >>> values = weight.reshape(-1)[lay.index]
    """
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or mask.dim() not in (2, 4):
        raise ValueError("sparse_layout: mask must be a 2-d or 4-d bool tensor, got "
                         f"{getattr(mask, 'dtype', type(mask).__name__)} "
                         f"{tuple(getattr(mask, 'shape', ()))}")
    mask = mask.detach().cpu()
    rows, cin = mask.shape[0], mask.shape[1]
    per_row = mask[0].numel() if rows else 0
    kk = per_row // cin if cin else 1
    if per_row >= 2 ** 31:
        raise ValueError(f"sparse_layout: rows of {per_row} weights do not fit int32 indices")
    # each row by tap, then input channel (the kernels read the ranges of taps off the rows):
    # the nonzeros of the mask with the input channel innermost, in row-major order
    by_tap = mask.permute(0, 2, 3, 1) if mask.dim() == 4 else mask
    nz = by_tap.reshape(rows, -1).nonzero()
    r, tap, ic = nz[:, 0], nz[:, 1] // max(cin, 1), nz[:, 1] % max(cin, 1)
    c = ic * kk + tap
    row_ptr = torch.zeros(rows + 1, dtype=torch.long)
    row_ptr[1:] = torch.bincount(r, minlength=rows).cumsum(0)
    t_ptr = torch.zeros(cin + 1, dtype=torch.long)
    t_ptr[1:] = torch.bincount(ic, minlength=cin).cumsum(0)
    t_idx = torch.argsort(ic, stable=True).to(torch.int32)
    return SparseLayout(row_ptr, c.to(torch.int32), t_ptr, t_idx, r * per_row + c)


def _pair(v):
    return (int(v), int(v)) if isinstance(v, int) else tuple(int(t) for t in v)


def sparse_conv2d(x: torch.Tensor, values: torch.Tensor, layout: SparseLayout, bias,
                  weight_shape, stride=1, padding=0, dilation=1) -> torch.Tensor:
    """2-d convolution with a compressed sparse weight (groups = 1).

    Args:
        x: input ``(N, C, H, W)``, float32 or float64.
        values: the kept weights ``(nnz,)`` in the layout's order (the trainable parameter).
        layout: :func:`sparse_layout` of the keep-mask.
        bias: ``(O,)`` or None.
        weight_shape: the dense weight's ``(O, C, KH, KW)``.
        stride, padding, dilation: as ``torch.nn.functional.conv2d`` (int or pair).

    Returns:
        ``(N, O, OH, OW)``, equal to ``conv2d`` with the masked dense weight. Differentiable in
        ``x``, ``values`` and ``bias``.
    """
    stride, padding, dilation = _pair(stride), _pair(padding), _pair(dilation)
    ws = [int(s) for s in weight_shape]
    args = (x, values, layout.row_ptr, layout.col, layout.t_ptr, layout.t_idx, bias, ws,
            list(stride), list(padding), list(dilation))
    if dispatch.backend("sparse_conv2d", x.device.type) != "reference":
        return torch.ops.sparsepai.sparse_conv2d.default(*args)
    return sparse_conv2d_ref(*args)


def _setup_context(ctx, inputs, output):
    x, values, row_ptr, col, t_ptr, t_idx, bias, ws, stride, padding, dilation = inputs
    ctx.save_for_backward(x, values, row_ptr, col, t_ptr, t_idx)
    ctx.geometry = (ws, stride, padding, dilation)
    ctx.has_bias = bias is not None


def _backward(ctx, grad):
    x, values, row_ptr, col, t_ptr, t_idx = ctx.saved_tensors
    ws, stride, padding, dilation = ctx.geometry
    mask = [ctx.needs_input_grad[0], ctx.needs_input_grad[1],
            ctx.has_bias and ctx.needs_input_grad[6]]
    gx, gv, gb = torch.ops.sparsepai.sparse_conv2d_backward.default(
        grad, x, values, row_ptr, col, t_ptr, t_idx, ws, stride, padding, dilation, mask)
    return (gx if mask[0] else None, gv if mask[1] else None, None, None, None, None,
            gb if mask[2] else None, None, None, None, None)


def _register():
    if not has_extension() or not hasattr(torch.ops.sparsepai, "sparse_conv2d"):
        return False

    @torch.library.register_fake(_OP)
    def _(x, values, row_ptr, col, t_ptr, t_idx, bias, ws, stride, padding, dilation):
        torch._check(x.shape[1] == ws[1])
        ho = (x.shape[2] + 2 * padding[0] - dilation[0] * (ws[2] - 1) - 1) // stride[0] + 1
        wo = (x.shape[3] + 2 * padding[1] - dilation[1] * (ws[3] - 1) - 1) // stride[1] + 1
        return x.new_empty((x.shape[0], ws[0], ho, wo))

    @torch.library.register_fake(_OP + "_backward")
    def _(grad, x, values, row_ptr, col, t_ptr, t_idx, ws, stride, padding, dilation, mask):
        return (x.new_empty(x.shape) if mask[0] else None,
                values.new_empty(values.shape) if mask[1] else None,
                values.new_empty((ws[0],)) if mask[2] else None)

    torch.library.register_autograd(_OP, _backward, setup_context=_setup_context)
    return True


_register()
