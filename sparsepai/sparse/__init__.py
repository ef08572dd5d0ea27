"""Unstructured-sparse layers and ``sp.sparsify``: pruned ``Conv2d``/``Linear`` layers that
store and compute only their kept weights (CPU kernels in sparsepai/ops/sparse_conv.py and
sparse_linear.py)."""

from sparsepai.sparse.modules import SparseConv2d, SparseLinear
from sparsepai.sparse.sparsify import SparsifyEntry, densify, format_report, sparsify

__all__ = ["SparseConv2d", "SparseLinear", "SparsifyEntry", "densify", "format_report", "sparsify"]
