"""The ops: Python faces (argument checks, fake implementations), the dispatch table that picks
each op's backend (``dispatch.py``: C++ CPU, C++ CUDA, Triton, reference), the pure-PyTorch
references (``*_ref``) and the distributed top-k driver."""

from sparsepai.ops.topk import TopkResult, kth_largest, topk_mask

__all__ = ["TopkResult", "kth_largest", "topk_mask"]
