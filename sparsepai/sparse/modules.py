"""``SparseConv2d`` and ``SparseLinear``: layers whose weight is stored compressed.

Only the kept weights are stored (``values``, the trainable parameter) with their compressed
layout (:func:`sparsepai.ops.sparse_conv.sparse_layout`, non-persistent buffers), and only they
are computed, forward and backward, by the sparse kernels (:mod:`sparsepai.ops.sparse_conv`,
:mod:`sparsepai.ops.sparse_linear`). The state dict has the dense layer's keys and shapes
(``weight`` with the pruned entries zero, ``bias``), so it loads into the dense model and back.

A layer runs in one of two modes: ``"sparse"`` (the sparse kernels) or ``"dense"`` (the dense
weight is rebuilt from ``values`` each call and the dense ``conv2d``/``linear`` runs: the masked
dense layer, for shapes where that is faster). ``"auto"`` times both on the first call's shapes
and keeps the faster (:func:`sparsepai.sparse.sparsify` uses it when it has no example inputs).
"""

from __future__ import annotations

import abc

import torch
import torch.nn.functional as F

from sparsepai.ops.sparse_conv import sparse_conv2d, sparse_layout
from sparsepai.ops.sparse_linear import sparse_linear

MODES = ("sparse", "dense", "auto")


class _SparseBase(torch.nn.Module, abc.ABC):
    """Shared state of the sparse layers: values, layout, mode and the dense state dict."""

    def _init_sparse(self, weight: torch.Tensor, mask: torch.Tensor, bias, mode: str):
        if mode not in MODES:
            raise ValueError(f"{type(self).__name__}: mode must be one of {MODES}, got {mode!r}")
        if mask.shape != weight.shape:
            raise ValueError(f"{type(self).__name__}: mask shape {tuple(mask.shape)} differs "
                             f"from the weight's {tuple(weight.shape)}")
        lay = sparse_layout(mask)
        self.weight_shape = tuple(int(s) for s in weight.shape)
        self.values = torch.nn.Parameter(weight.detach().reshape(-1)[lay.index.to(weight.device)]
                                         .clone(), requires_grad=weight.requires_grad)
        self.bias = None if bias is None else torch.nn.Parameter(
            bias.detach().clone(), requires_grad=bias.requires_grad)
        for name in ("row_ptr", "col", "t_ptr", "t_idx", "index"):
            self.register_buffer(name, getattr(lay, name), persistent=False)
        self.mode = mode
        self.timing: dict = {}  # what "auto" measured (ms), for the report

    @property
    def layout(self):
        from sparsepai.ops.sparse_conv import SparseLayout

        return SparseLayout(self.row_ptr, self.col, self.t_ptr, self.t_idx, self.index)

    @property
    def density(self) -> float:
        n = 1
        for s in self.weight_shape:
            n *= s
        return self.values.numel() / max(n, 1)

    def dense_weight(self) -> torch.Tensor:
        """The dense weight (pruned entries zero); differentiable in ``values``."""
        n = 1
        for d in self.weight_shape:
            n *= d
        return self.values.new_zeros(n).index_put((self.index,), self.values).view(
            self.weight_shape)

    def mask(self) -> torch.Tensor:
        m = torch.zeros(self.weight_shape, dtype=torch.bool, device=self.values.device)
        m.view(-1)[self.index.to(m.device)] = True
        return m

    # the dense layer's state dict: weight (pruned entries zero) and bias
    def _save_to_state_dict(self, destination, prefix, keep_vars):
        w = self.dense_weight()
        destination[prefix + "weight"] = w if keep_vars else w.detach()
        if self.bias is not None:
            destination[prefix + "bias"] = self.bias if keep_vars else self.bias.detach()

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        keys = {prefix + "weight": None}
        if self.bias is not None:
            keys[prefix + "bias"] = None
        for key in keys:
            if key not in state_dict:
                missing_keys.append(key)
        w = state_dict.get(prefix + "weight")
        if w is not None:
            if tuple(w.shape) != self.weight_shape:
                error_msgs.append(f"size mismatch for {prefix}weight: copying a param with shape "
                                  f"{tuple(w.shape)}, the model has {self.weight_shape}")
            else:
                with torch.no_grad():
                    self.values.copy_(w.reshape(-1)[self.index.to(w.device)])
        b = state_dict.get(prefix + "bias")
        if b is not None and self.bias is not None:
            if b.shape != self.bias.shape:
                error_msgs.append(f"size mismatch for {prefix}bias")
            else:
                with torch.no_grad():
                    self.bias.copy_(b)
        if strict:
            for key in state_dict:
                if key.startswith(prefix) and key not in keys and "." not in key[len(prefix):]:
                    unexpected_keys.append(key)

    @abc.abstractmethod
    def _run(self, x, sparse: bool):
        """The layer's output: the sparse kernels when ``sparse``, else the masked dense op."""

    def forward(self, x):
        sparse = x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64)
        if self.mode == "auto" and sparse:
            self.mode = self._choose(x)
        return self._run(x, sparse and self.mode == "sparse")

    @torch.enable_grad()
    def _choose(self, x) -> str:
        """Time forward + backward of both modes on ``x``'s shape; the faster one."""
        from sparsepai.sparse.timing import time_fwd_bwd

        probe = torch.randn_like(x)
        t_sparse = time_fwd_bwd(lambda v: self._run(v, True), probe, self.parameters())
        t_dense = time_fwd_bwd(lambda v: self._run(v, False), probe, self.parameters())
        self.timing = {"sparse_ms": t_sparse * 1e3, "dense_ms": t_dense * 1e3}
        return "sparse" if t_sparse < t_dense else "dense"


class SparseConv2d(_SparseBase):
    """A ``Conv2d`` (groups = 1, zero padding) with a compressed sparse weight.

    Args:
        conv: the dense layer (its weight, bias and geometry are copied).
        mask: bool keep-mask shaped like ``conv.weight``.
        mode: ``"sparse"``, ``"dense"`` or ``"auto"`` (module docstring).

    Shapes:
        input ``(N, C, H, W)`` -> ``(N, O, OH, OW)`` as ``conv``.

    Example:
        >>> layer = SparseConv2d(torch.nn.Conv2d(64, 64, 3, padding=1), mask)
        >>> y = layer(torch.randn(8, 64, 32, 32))
    """

    def __init__(self, conv: torch.nn.Conv2d, mask: torch.Tensor, mode: str = "sparse"):
        super().__init__()
        if conv.groups != 1 or conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise ValueError("SparseConv2d: needs groups = 1, zero padding given as numbers; got "
                             f"groups={conv.groups}, padding={conv.padding!r}, "
                             f"padding_mode={conv.padding_mode!r}")
        self.stride, self.padding, self.dilation = conv.stride, conv.padding, conv.dilation
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels
        self.kernel_size = conv.kernel_size
        self._init_sparse(conv.weight, mask, conv.bias, mode)

    def _run(self, x, sparse):
        if sparse:
            return sparse_conv2d(x, self.values, self.layout, self.bias, self.weight_shape,
                                 self.stride, self.padding, self.dilation)
        return F.conv2d(x, self.dense_weight(), self.bias, self.stride, self.padding,
                        self.dilation)

    def to_dense(self) -> torch.nn.Conv2d:
        """The equivalent ``Conv2d`` (pruned weights zero)."""
        conv = torch.nn.Conv2d(self.in_channels, self.out_channels, self.kernel_size,
                               self.stride, self.padding, self.dilation, bias=self.bias is not None,
                               device=self.values.device, dtype=self.values.dtype)
        conv.load_state_dict(self.state_dict())
        return conv

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, density={self.density:.3f}, "
                f"mode={self.mode}")


class SparseLinear(_SparseBase):
    """A ``Linear`` with a compressed sparse weight.

    Args:
        linear: the dense layer.
        mask: bool keep-mask shaped like ``linear.weight``.
        mode: ``"sparse"``, ``"dense"`` or ``"auto"``.

    Shapes:
        ``(..., in_features)`` -> ``(..., out_features)``.

    Example:
        >>> layer = SparseLinear(torch.nn.Linear(768, 3072), torch.rand(3072, 768) > 0.9)
    """

    def __init__(self, linear: torch.nn.Linear, mask: torch.Tensor, mode: str = "sparse"):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self._init_sparse(linear.weight, mask, linear.bias, mode)

    def _run(self, x, sparse):
        if sparse:
            return sparse_linear(x, self.values, self.layout, self.bias, self.in_features)
        return F.linear(x, self.dense_weight(), self.bias)

    def to_dense(self) -> torch.nn.Linear:
        """The equivalent ``Linear`` (pruned weights zero)."""
        lin = torch.nn.Linear(self.in_features, self.out_features, bias=self.bias is not None,
                              device=self.values.device, dtype=self.values.dtype)
        lin.load_state_dict(self.state_dict())
        return lin

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"density={self.density:.3f}, mode={self.mode}")
