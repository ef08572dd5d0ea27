"""Channel-sparse 2-d convolution as implicit-GEMM Triton kernels (forward, input gradient,
weight gradient).

The GEMM rows are output pixels (n, ho, wo), its columns the kept output channels, and its
reduction runs over (kept input channel, kh, kw): the kernels index the kept input channels
through ``in_idx`` and the wide output through ``out_idx`` directly, so no gathered copy of the
input (or scattered copy of the output) is ever made. The input gradient is accumulated with
atomics (two output pixels, or a repeated input channel, may hit the same input element).
Tests run them on CPU tensors with ``TRITON_INTERPRET=1``. Inputs must be contiguous NCHW.
"""

from __future__ import annotations

import torch

from sparsepai.ops._triton import has_triton

if has_triton():
    import triton
    import triton.language as tl

    @triton.jit
    def _pixels(rm, Ho, Wo):
        n = rm // (Ho * Wo)
        hw = rm % (Ho * Wo)
        return n, hw // Wo, hw % Wo

    @triton.jit
    def _taps(rk, KH: tl.constexpr, KW: tl.constexpr):
        ci = rk // (KH * KW)
        r = rk % (KH * KW)
        return ci, r // KW, r % KW

    @triton.jit
    def _im2col(rm, rk, n, ho, wo, cin, kh, kw, M, KTOT, C, H, W, sh, sw, ph, pw, dh, dw):
        """Offsets into x (N, C, H, W) of the im2col tile (pixels rm x taps rk), and where the
        tap falls inside the image (zero padding elsewhere)."""
        hi = ho[:, None] * sh - ph + kh[None, :] * dh
        wi = wo[:, None] * sw - pw + kw[None, :] * dw
        valid = (rm < M)[:, None] & (rk < KTOT)[None, :] & (hi >= 0) & (hi < H) & \
            (wi >= 0) & (wi < W)
        return ((n[:, None] * C + cin[None, :]) * H + hi) * W + wi, valid

    @triton.jit
    def _fwd_kernel(x, w, b, in_idx, out_idx, y, M, C, H, W, Ho, Wo, O, KTOT, OC,
                    sh, sw, ph, pw, dh, dw, KH: tl.constexpr, KW: tl.constexpr,
                    HAS_BIAS: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr,
                    BK: tl.constexpr):
        rm = tl.program_id(0) * BM + tl.arange(0, BM)
        rn = tl.program_id(1) * BN + tl.arange(0, BN)
        n, ho, wo = _pixels(rm, Ho, Wo)
        acc = tl.zeros((BM, BN), dtype=tl.float32)
        for k0 in range(0, KTOT, BK):
            rk = k0 + tl.arange(0, BK)
            ci, kh, kw = _taps(rk, KH, KW)
            cin = tl.load(in_idx + ci, mask=rk < KTOT, other=0)
            off, am = _im2col(rm, rk, n, ho, wo, cin, kh, kw, M, KTOT, C, H, W, sh, sw, ph, pw,
                              dh, dw)
            a = tl.load(x + off, mask=am, other=0.0)
            bm = (rk < KTOT)[:, None] & (rn < O)[None, :]
            bt = tl.load(w + rn[None, :] * KTOT + rk[:, None], mask=bm, other=0.0)
            acc += tl.dot(a.to(tl.float32), bt.to(tl.float32), input_precision="ieee")
        if HAS_BIAS:
            acc += tl.load(b + rn, mask=rn < O, other=0.0).to(tl.float32)[None, :]
        oc = tl.load(out_idx + rn, mask=rn < O, other=0)
        om = (rm < M)[:, None] & (rn < O)[None, :]
        tl.store(y + ((n[:, None] * OC + oc[None, :]) * Ho + ho[:, None]) * Wo + wo[:, None],
                 acc.to(y.dtype.element_ty), mask=om)

    @triton.jit
    def _grad_input_kernel(g, w, in_idx, out_idx, gx, M, C, H, W, Ho, Wo, O, KTOT, OC,
                           sh, sw, ph, pw, dh, dw, KH: tl.constexpr, KW: tl.constexpr,
                           BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
        # tile (pixels x taps) of dL/d(im2col(x)) = G[pixels, O] @ W[O, taps], scattered back
        rm = tl.program_id(0) * BM + tl.arange(0, BM)
        rk = tl.program_id(1) * BK + tl.arange(0, BK)
        n, ho, wo = _pixels(rm, Ho, Wo)
        acc = tl.zeros((BM, BK), dtype=tl.float32)
        for o0 in range(0, O, BN):
            ro = o0 + tl.arange(0, BN)
            oc = tl.load(out_idx + ro, mask=ro < O, other=0)
            gm = (rm < M)[:, None] & (ro < O)[None, :]
            gt = tl.load(g + ((n[:, None] * OC + oc[None, :]) * Ho + ho[:, None]) * Wo
                         + wo[:, None], mask=gm, other=0.0)
            wm = (ro < O)[:, None] & (rk < KTOT)[None, :]
            wt = tl.load(w + ro[:, None] * KTOT + rk[None, :], mask=wm, other=0.0)
            acc += tl.dot(gt.to(tl.float32), wt.to(tl.float32), input_precision="ieee")
        ci, kh, kw = _taps(rk, KH, KW)
        cin = tl.load(in_idx + ci, mask=rk < KTOT, other=0)
        off, m = _im2col(rm, rk, n, ho, wo, cin, kh, kw, M, KTOT, C, H, W, sh, sw, ph, pw, dh,
                         dw)
        tl.atomic_add(gx + off, acc, mask=m)

    @triton.jit
    def _grad_weight_kernel(g, x, in_idx, out_idx, gw, M, C, H, W, Ho, Wo, O, KTOT, OC,
                            sh, sw, ph, pw, dh, dw, KH: tl.constexpr, KW: tl.constexpr,
                            BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
        # tile (kept outputs x taps) of G[pixels, O]^T @ im2col(x)[pixels, taps]
        ro = tl.program_id(0) * BN + tl.arange(0, BN)
        rk = tl.program_id(1) * BK + tl.arange(0, BK)
        oc = tl.load(out_idx + ro, mask=ro < O, other=0)
        ci, kh, kw = _taps(rk, KH, KW)
        cin = tl.load(in_idx + ci, mask=rk < KTOT, other=0)
        acc = tl.zeros((BN, BK), dtype=tl.float32)
        for m0 in range(0, M, BM):
            rm = m0 + tl.arange(0, BM)
            n, ho, wo = _pixels(rm, Ho, Wo)
            gm = (ro < O)[:, None] & (rm < M)[None, :]
            gt = tl.load(g + ((n[None, :] * OC + oc[:, None]) * Ho + ho[None, :]) * Wo
                         + wo[None, :], mask=gm, other=0.0)
            off, xm = _im2col(rm, rk, n, ho, wo, cin, kh, kw, M, KTOT, C, H, W, sh, sw, ph, pw,
                              dh, dw)
            xt = tl.load(x + off, mask=xm, other=0.0)
            acc += tl.dot(gt.to(tl.float32), xt.to(tl.float32), input_precision="ieee")
        m = (ro < O)[:, None] & (rk < KTOT)[None, :]
        tl.store(gw + ro[:, None] * KTOT + rk[None, :], acc.to(gw.dtype.element_ty), mask=m)


_BM, _BN, _BK = 32, 16, 16


def _geometry(x, weight, stride, padding, dilation):
    n, c, h, w = x.shape
    o, _, kh, kw = weight.shape
    ho = (h + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    wo = (w + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    return n, c, h, w, o, kh, kw, ho, wo


def _args(stride, padding, dilation):
    return (stride[0], stride[1], padding[0], padding[1], dilation[0], dilation[1])


def conv_forward(x, weight, bias, in_idx, out_idx, out_channels, stride, padding, dilation):
    """Forward: ``(N, out_channels, Ho, Wo)``, the kept channels computed, zeros elsewhere."""
    x, weight = x.contiguous(), weight.contiguous()
    n, c, h, w, o, kh, kw, ho, wo = _geometry(x, weight, stride, padding, dilation)
    y = torch.zeros((n, out_channels, ho, wo), dtype=x.dtype, device=x.device)
    m, ktot = n * ho * wo, in_idx.numel() * kh * kw
    if m == 0 or o == 0:
        return y
    grid = (triton.cdiv(m, _BM), triton.cdiv(o, _BN))
    b = bias.contiguous() if bias is not None else weight
    _fwd_kernel[grid](x, weight, b, in_idx.contiguous(), out_idx.contiguous(), y, m, c, h, w,
                      ho, wo, o, ktot, out_channels, *_args(stride, padding, dilation),
                      KH=kh, KW=kw, HAS_BIAS=bias is not None, BM=_BM, BN=_BN, BK=_BK)
    return y


def conv_backward(grad_out, x, weight, in_idx, out_idx, stride, padding, dilation, output_mask):
    """Gradients ``(input, weight, bias)`` (None where ``output_mask`` is False)."""
    g, x, weight = grad_out.contiguous(), x.contiguous(), weight.contiguous()
    n, c, h, w, o, kh, kw, ho, wo = _geometry(x, weight, stride, padding, dilation)
    m, ktot = n * ho * wo, in_idx.numel() * kh * kw
    geo = (m, c, h, w, ho, wo, o, ktot, g.shape[1], *_args(stride, padding, dilation))
    ii, oi = in_idx.contiguous(), out_idx.contiguous()
    gx = gw = gb = None
    if output_mask[0]:
        acc = torch.zeros(x.shape, dtype=torch.float32, device=x.device)
        if m and o and ktot:
            grid = (triton.cdiv(m, _BM), triton.cdiv(ktot, _BK))
            _grad_input_kernel[grid](g, weight, ii, oi, acc, *geo, KH=kh, KW=kw, BM=_BM, BN=_BN,
                                     BK=_BK)
        gx = acc.to(x.dtype)
    if output_mask[1]:
        gw = torch.zeros(weight.shape, dtype=weight.dtype, device=x.device)
        if m and o and ktot:
            grid = (triton.cdiv(o, _BN), triton.cdiv(ktot, _BK))
            _grad_weight_kernel[grid](g, x, ii, oi, gw, *geo, KH=kh, KW=kw, BM=_BM, BN=_BN,
                                      BK=_BK)
    if output_mask[2]:
        gb = g.index_select(1, oi).sum((0, 2, 3))
    return gx, gw, gb
