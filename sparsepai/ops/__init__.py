"""Python faces of the sparsepai ops, their fake implementations and pure-PyTorch references."""

from sparsepai.ops.topk import TopkResult, kth_largest, topk_mask

__all__ = ["TopkResult", "kth_largest", "topk_mask"]
