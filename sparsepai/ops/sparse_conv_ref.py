"""Oracles of the unstructured-sparse ops: the masked dense layer.

The compressed weight (CSR by output channel, see :func:`sparsepai.ops.sparse_conv.sparse_layout`)
is scattered into a dense zero weight and the dense ``conv2d``/``linear`` runs on it.
Differentiable with plain autograd: the gradient of ``values`` is the dense weight gradient at
the kept positions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def dense_weight(values: torch.Tensor, row_ptr: torch.Tensor, col: torch.Tensor,
                 shape) -> torch.Tensor:
    """The dense weight of ``shape`` holding ``values`` at the kept positions, zeros elsewhere."""
    rows = int(shape[0])
    per_row = 1
    for s in shape[1:]:
        per_row *= int(s)
    counts = (row_ptr[1:] - row_ptr[:-1]).to(values.device)
    row_of = torch.repeat_interleave(torch.arange(rows, device=values.device), counts)
    flat = row_of * per_row + col.to(values.device, torch.long)
    return values.new_zeros(rows * per_row).index_put((flat,), values).view(*[int(s) for s in shape])


def sparse_conv2d_ref(x, values, row_ptr, col, t_ptr, t_idx, bias, weight_shape, stride=(1, 1),
                      padding=(0, 0), dilation=(1, 1)):
    """``conv2d`` with the dense weight of the CSR arrays (``t_ptr``/``t_idx`` unused)."""
    w = dense_weight(values, row_ptr, col, weight_shape)
    return F.conv2d(x, w, bias, tuple(stride), tuple(padding), tuple(dilation))


def sparse_linear_ref(x, values, row_ptr, col, t_ptr, t_idx, bias, in_features):
    """``linear`` with the dense weight of the CSR arrays (``t_ptr``/``t_idx`` unused)."""
    w = dense_weight(values, row_ptr, col, (row_ptr.numel() - 1, int(in_features)))
    return F.linear(x, w, bias)
