"""The ops, each family's files named after it (``topk*``, ``masked_optim*``,
``channel_sparse*``): Python faces (argument checks, fake implementations), Triton kernels
(``*_triton``, guarded by ``_triton.has_triton``: no Triton, no failure), pure-PyTorch references
(``*_ref``), the distributed top-k driver (``topk_dist``), the bit layout of masks the optimizer
kernels read (``bits``), and the dispatch table that picks each op's backend (``dispatch.py``:
C++ CPU, C++ CUDA, Triton, reference)."""

from sparsepai.ops.topk import TopkResult, kth_largest, topk_mask

__all__ = ["TopkResult", "kth_largest", "topk_mask"]
