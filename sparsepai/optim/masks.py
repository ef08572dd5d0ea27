"""Moved to :mod:`sparsepai.ops.bits`; kept so that imports of the old place keep working."""

from sparsepai.ops.bits import pack_mask, unpack_mask

__all__ = ["pack_mask", "unpack_mask"]
