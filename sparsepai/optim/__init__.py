"""Masked optimizers: pruned weights held at exactly zero, at (almost) no cost."""

from sparsepai.optim.masked import MaskedAdamW, MaskedSGD
from sparsepai.ops.bits import pack_mask, unpack_mask

__all__ = ["MaskedAdamW", "MaskedSGD", "pack_mask", "unpack_mask"]
