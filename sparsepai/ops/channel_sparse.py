"""Channel-sparse 2-d convolution: ``channel_sparse_conv2d``.

``y = zeros(N, out_channels, Ho, Wo); y[:, out_idx] = conv2d(x[:, in_idx], weight, bias)``,
forward and backward, as one op: a slimmed branch of a residual network reads the channels it
keeps and writes the channels it computes into a wider stream. The op is
``sparsepai::channel_sparse_conv2d`` (schema in csrc/ops.cpp); CPU kernel csrc/cpu/
channel_sparse.cpp (gather, native convolution, scatter); CUDA: the implicit-GEMM Triton kernels
of sparsepai/ops/channel_sparse_triton.py registered here as the op's CUDA kernel; the oracle is
:func:`channel_sparse_conv2d_ref`. The dispatch table (sparsepai/ops/dispatch.py) chooses.
"""

from __future__ import annotations

import torch

from sparsepai._ext import has_extension
from sparsepai.ops import dispatch

_OP = "sparsepai::channel_sparse_conv2d"


def _pair(v):
    return (int(v), int(v)) if isinstance(v, int) else tuple(int(t) for t in v)


def channel_sparse_conv2d_ref(x, weight, bias, in_idx, out_idx, out_channels, stride=1,
                              padding=0, dilation=1):
    """The oracle: a dense convolution with the kept weights placed in a full-size zero weight.

    Differentiable with plain autograd; a repeated input channel adds its weights.
    """
    stride, padding, dilation = _pair(stride), _pair(padding), _pair(dilation)
    o, _, kh, kw = weight.shape
    full = weight.new_zeros((out_channels, x.shape[1], kh, kw))
    rows = out_idx.to(x.device).view(-1, 1).expand(o, in_idx.numel())
    cols = in_idx.to(x.device).view(1, -1).expand(o, in_idx.numel())
    full = full.index_put((rows, cols), weight, accumulate=True)
    b = None
    if bias is not None:
        b = bias.new_zeros(out_channels).index_put((out_idx.to(x.device),), bias)
    y = torch.nn.functional.conv2d(x, full, b, stride, padding, dilation)
    if bias is not None:
        # channels outside out_idx carry no bias: they are not computed
        keep = torch.zeros(out_channels, dtype=torch.bool, device=x.device)
        keep[out_idx.to(x.device)] = True
        y = y * keep.view(1, -1, 1, 1)
    return y


def channel_sparse_conv2d(x: torch.Tensor, weight: torch.Tensor, bias, in_idx: torch.Tensor,
                          out_idx: torch.Tensor, out_channels: int, stride=1, padding=0,
                          dilation=1) -> torch.Tensor:
    """Convolve the kept input channels and scatter the kept outputs into a wide output.

    Args:
        x: input ``(N, C, H, W)``.
        weight: ``(len(out_idx), len(in_idx), kh, kw)``.
        bias: ``(len(out_idx),)`` or None.
        in_idx: int64 input channels read (on the CPU for the CPU kernel).
        out_idx: int64 distinct output channels written, each < ``out_channels``.
        out_channels: channels of the output.
        stride, padding, dilation: as ``torch.nn.functional.conv2d`` (int or pair).

    Returns:
        ``(N, out_channels, Ho, Wo)``: zeros outside ``out_idx``. Differentiable in ``x``,
        ``weight`` and ``bias``.
    """
    stride, padding, dilation = _pair(stride), _pair(padding), _pair(dilation)
    # the C++ and Triton kernels are both reached through the op (autograd is registered on it)
    if dispatch.backend("channel_sparse_conv2d", x.device.type) != "reference":
        return torch.ops.sparsepai.channel_sparse_conv2d.default(
            x, weight, bias, in_idx, out_idx, int(out_channels), list(stride), list(padding),
            list(dilation))
    return channel_sparse_conv2d_ref(x, weight, bias, in_idx, out_idx, out_channels, stride,
                                     padding, dilation)


def _setup_context(ctx, inputs, output):
    x, weight, bias, in_idx, out_idx, _, stride, padding, dilation = inputs
    ctx.save_for_backward(x, weight, in_idx, out_idx)
    ctx.geometry = (stride, padding, dilation)
    ctx.has_bias = bias is not None


def _backward(ctx, grad):
    x, weight, in_idx, out_idx = ctx.saved_tensors
    stride, padding, dilation = ctx.geometry
    mask = [ctx.needs_input_grad[0], ctx.needs_input_grad[1],
            ctx.has_bias and ctx.needs_input_grad[2]]
    gx, gw, gb = torch.ops.sparsepai.channel_sparse_conv2d_backward.default(
        grad, x, weight, in_idx, out_idx, stride, padding, dilation, mask)
    return (gx if mask[0] else None, gw if mask[1] else None, gb if mask[2] else None,
            None, None, None, None, None, None)


def _register():
    """Fakes, autograd and (with Triton) the CUDA kernels; False without the extension."""
    if not has_extension() or not hasattr(torch.ops.sparsepai, "channel_sparse_conv2d"):
        return False

    def out_hw(x, weight, stride, padding, dilation):
        kh, kw = weight.shape[2], weight.shape[3]
        ho = (x.shape[2] + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
        wo = (x.shape[3] + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
        return ho, wo

    @torch.library.register_fake(_OP)
    def _(x, weight, bias, in_idx, out_idx, out_channels, stride, padding, dilation):
        torch._check(weight.shape[1] == in_idx.shape[0])
        torch._check(weight.shape[0] == out_idx.shape[0])
        ho, wo = out_hw(x, weight, stride, padding, dilation)
        return x.new_empty((x.shape[0], out_channels, ho, wo))

    @torch.library.register_fake(_OP + "_backward")
    def _(grad, x, weight, in_idx, out_idx, stride, padding, dilation, mask):
        return (x.new_empty(x.shape) if mask[0] else None,
                weight.new_empty(weight.shape) if mask[1] else None,
                weight.new_empty((weight.shape[0],)) if mask[2] else None)

    torch.library.register_autograd(_OP, _backward, setup_context=_setup_context)

    op = "channel_sparse_conv2d"
    if not dispatch.available("cuda", op, "cuda") and dispatch.available("triton", op, "cuda"):
        from sparsepai.ops import channel_sparse_triton as tk

        @torch.library.register_kernel(_OP, "cuda")
        def _(x, weight, bias, in_idx, out_idx, out_channels, stride, padding, dilation):
            return tk.conv_forward(x, weight, bias, in_idx, out_idx, out_channels, stride,
                                   padding, dilation)

        @torch.library.register_kernel(_OP + "_backward", "cuda")
        def _(grad, x, weight, in_idx, out_idx, stride, padding, dilation, mask):
            return tk.conv_backward(grad, x, weight, in_idx, out_idx, stride, padding, dilation,
                                    mask)
    return True


_register()
