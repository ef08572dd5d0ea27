"""Bit-packed keep-masks: 1 bit per weight, 64 to an int64 word (bit j of word w keeps element
64 * w + j of the flattened tensor), the layout the masked optimizer kernels read."""

from __future__ import annotations

import sys

import torch

_WEIGHTS = {}


def _bit_weights(device) -> torch.Tensor:
    w = _WEIGHTS.get(device)
    if w is None:
        w = torch.tensor([1 << j if j < 63 else -(1 << 63) for j in range(64)], dtype=torch.int64,
                         device=device)
        _WEIGHTS[device] = w
    return w


def pack_mask(mask: torch.Tensor) -> torch.Tensor:
    """Pack a bool mask into int64 words.

    Args:
        mask: bool tensor of any shape (row-major order is used).

    Returns:
        int64 tensor of ``ceil(mask.numel() / 64)`` words on the mask's device.
    """
    flat = mask.reshape(-1)
    pad = (-flat.numel()) % 64
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    rows = flat.view(-1, 64)
    out = torch.empty(rows.shape[0], dtype=torch.int64, device=mask.device)
    # a few rows at a time keeps the int64 temporary small
    step = 1 << 16
    w = _bit_weights(mask.device)
    for i in range(0, rows.shape[0], step):
        out[i : i + step] = (rows[i : i + step].to(torch.int64) * w).sum(1)
    return out


def unpack_mask(words: torch.Tensor, shape) -> torch.Tensor:
    """Inverse of :func:`pack_mask`: a bool tensor of ``shape``."""
    n = 1
    for s in shape:
        n *= int(s)
    # byte-wise (little-endian words: byte b of word w holds elements 64w + 8b .. 64w + 8b + 7),
    # so the temporary is 1 byte per element rather than an int64
    assert sys.byteorder == "little"
    data = words.contiguous().view(torch.uint8)
    bits = (data.unsqueeze(1) >> torch.arange(8, dtype=torch.uint8, device=words.device)) & 1
    return bits.reshape(-1)[:n].bool().reshape(shape)
