"""Moved to :mod:`sparsepai.masks.bits`; kept so that imports of the old place keep working."""

from sparsepai.masks.bits import pack_mask, unpack_mask

__all__ = ["pack_mask", "unpack_mask"]
