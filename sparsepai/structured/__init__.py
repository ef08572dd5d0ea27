"""Structured (channel) pruning.

- The channel dependency graph: its model (``graph``), built by ``analysis.analyse`` from a
  ``torch.export`` capture (``capture``, ``opgraph``, ``oplayers``, ``opshape``, ``opvalues``,
  ``heads``, ``probe``) or a ``torch.fx`` trace (``fxgraph``).
- Channel masks: their geometry (``channels``), applying them to the dense model (``apply``,
  plugged into ``sparsepai.masks`` on import), scoring and thresholding them (``prune``, with
  ``cost`` weighting).
- ``slim``: the physically smaller model (``narrow`` narrows layers; ``slim_layers`` holds the
  channel-sparse layers).
"""

# registers channel masks with sparsepai.masks
from sparsepai.structured import apply as _apply  # noqa: F401
from sparsepai.structured.analysis import analyse
from sparsepai.structured.graph import TraceError
from sparsepai.structured.slim import load_slim, save_slim, slim
from sparsepai.structured.slim_layers import ChannelScatter, ChannelSparseConv2d, ChannelSparseLinear

__all__ = ["ChannelScatter",
           "ChannelSparseConv2d", "ChannelSparseLinear", "TraceError", "analyse", "load_slim",
           "save_slim", "slim"]
