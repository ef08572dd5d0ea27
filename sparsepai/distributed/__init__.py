"""Pruning across ranks on ``torch.distributed``.

- ``sp.score``/``sp.prune(..., group=)``: :mod:`.pruning` (the driver), :mod:`.replicated`
  (gradients averaged over the group for plain and DDP models), :mod:`.sharded` (FSDP2). The
  last two plug into :mod:`sparsepai.core` when imported (a copy hook and the sharded
  gradients), so core imports nothing of this package.
- Sharded masks on disk (DCP, resharded on load): :func:`save_sharded_masks`,
  :func:`load_sharded_masks` (:mod:`.checkpoint`).
- ``sp.topk_mask(..., group=)`` itself lives with the op (``sparsepai/ops/topk_dist.py``).
"""

from sparsepai.distributed import pruning as _pruning  # noqa: F401 (plugs into sparsepai.core)
from sparsepai.distributed.checkpoint import load_sharded_masks, save_sharded_masks

__all__ = ["load_sharded_masks", "save_sharded_masks"]
