"""Pruning across ranks on ``torch.distributed``.

- ``sp.score``/``sp.prune(..., group=)``: :mod:`.pruning` (the driver), :mod:`.replicated`
  (gradients averaged over the group for plain and DDP models), :mod:`.sharded` (FSDP2).
- Sharded masks on disk (DCP, resharded on load): :func:`save_sharded_masks`,
  :func:`load_sharded_masks` (:mod:`.checkpoint`).
- ``sp.topk_mask(..., group=)`` itself lives with the op (``sparsepai/ops/topk_dist.py``).
"""

from sparsepai.distributed.checkpoint import load_sharded_masks, save_sharded_masks

__all__ = ["load_sharded_masks", "save_sharded_masks"]
