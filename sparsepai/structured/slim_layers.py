"""The modules ``sp.slim`` puts in place of a layer that computes only part of a wider
stream (a producer keeping fewer channels than the residual stream it writes, and the norm or
depthwise layer after it): each computes its own channels and writes them into a zero tensor
of the stream's width, as the masked dense model does."""

from __future__ import annotations

from torch import nn


class ChannelSparseConv2d(nn.Module):
    """A convolution that computes ``len(out_idx)`` output channels and writes them into
    channels ``out_idx`` of an ``out_channels``-wide output (zeros elsewhere), reading input
    channels ``in_idx``.

    Shapes: input ``(N, C, H, W)``, output ``(N, out_channels, Ho, Wo)``.
    """

    def __init__(self, weight, bias, in_idx, out_idx, out_channels, stride, padding, dilation):
        super().__init__()
        self.weight = nn.Parameter(weight)
        self.bias = nn.Parameter(bias) if bias is not None else None
        self.register_buffer("in_idx", in_idx.clone())
        self.register_buffer("out_idx", out_idx.clone())
        self.out_channels = int(out_channels)
        self.stride, self.padding, self.dilation = tuple(stride), tuple(padding), tuple(dilation)

    def forward(self, x):
        from sparsepai.ops.channel_sparse import channel_sparse_conv2d

        return channel_sparse_conv2d(x, self.weight, self.bias, self.in_idx, self.out_idx,
                                     self.out_channels, self.stride, self.padding, self.dilation)

    def extra_repr(self):
        return (f"{self.weight.shape[1]} -> {self.weight.shape[0]} of {self.out_channels}, "
                f"kernel={tuple(self.weight.shape[2:])}, stride={self.stride}")


def _widen(y, dim, idx, width):
    """``y`` placed at positions ``idx`` of dimension ``dim`` of a zero tensor ``width`` wide."""
    shape = list(y.shape)
    shape[dim] = width
    return y.new_zeros(shape).index_copy(dim, idx, y)


class ChannelScatter(nn.Module):
    """Runs a narrow ``module`` and writes its output channels into channels ``idx`` of a
    ``width``-channel output (zeros elsewhere; channels along ``dim``): the generic form of a producer that computes only
    part of a wider residual stream, for the layers ``ChannelSparseConv2d`` does not cover
    (Conv1d/Conv3d, non-zero padding modes).

    Shapes: output ``(N, width, ...)``.
    """

    def __init__(self, module, idx, width, dim=1):
        super().__init__()
        self.module = module
        self.register_buffer("idx", idx.clone())
        self.width, self.dim = int(width), int(dim)

    def forward(self, x):
        return _widen(self.module(x), self.dim, self.idx, self.width)


class ChannelSparseLinear(nn.Module):
    """A linear layer computing ``len(out_idx)`` of ``out_features`` outputs (zeros elsewhere)."""

    def __init__(self, weight, bias, out_idx, out_features):
        super().__init__()
        self.weight = nn.Parameter(weight)
        self.bias = nn.Parameter(bias) if bias is not None else None
        self.register_buffer("out_idx", out_idx.clone())
        self.out_features = int(out_features)

    def forward(self, x):
        return _widen(nn.functional.linear(x, self.weight, self.bias), -1, self.out_idx,
                      self.out_features)


class ChannelSubset(nn.Module):
    """Applies a channel-wise ``module`` (a batch norm or depthwise convolution over
    ``len(idx)`` channels) to channels ``idx`` of a ``width``-channel input; the other channels
    are zero. Used after a producer that writes only part of a wider residual stream, so that
    the slim model has no parameters for the channels that producer does not compute (and trains
    like the masked dense model, where those parameters stay zero).

    Shapes: input ``(N, width, ...)``, output the same.
    """

    def __init__(self, module, idx, width):
        super().__init__()
        self.module = module
        self.register_buffer("idx", idx.clone())
        self.width = int(width)

    def forward(self, x):
        return _widen(self.module(x.index_select(1, self.idx)), 1, self.idx, self.width)
