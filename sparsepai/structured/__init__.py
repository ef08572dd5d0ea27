"""Structured (channel) pruning: the channel dependency graph (``graph``), channel masks and
structured scoring (``channels``), and ``slim``, which builds the physically smaller model."""

from sparsepai.structured.graph import TraceError, analyse
from sparsepai.structured.slim import (
    ChannelScatter,
    ChannelSparseConv2d,
    ChannelSparseLinear,
    load_slim,
    save_slim,
    slim,
)

__all__ = ["ChannelScatter",
           "ChannelSparseConv2d", "ChannelSparseLinear", "TraceError", "analyse", "load_slim",
           "save_slim", "slim"]
