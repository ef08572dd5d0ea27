"""Structured (channel) pruning: the channel dependency graph (``graph``), channel masks and
structured scoring (``channels``), and ``slim``, which builds the physically smaller model."""

from sparsepai.structured.graph import TraceError, analyse
from sparsepai.structured.slim import load_slim, save_slim, slim
from sparsepai.structured.slim_layers import ChannelScatter, ChannelSparseConv2d, ChannelSparseLinear

__all__ = ["ChannelScatter",
           "ChannelSparseConv2d", "ChannelSparseLinear", "TraceError", "analyse", "load_slim",
           "save_slim", "slim"]
