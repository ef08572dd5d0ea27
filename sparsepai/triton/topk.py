"""The top-k histogram pass as a Triton kernel, and a radix-select driver around it.

On a GPU this is an alternative to the CUDA kernels of csrc/cuda/topk.cu; on the CPU it runs
under ``TRITON_INTERPRET=1`` (how the tests check it). The mask pass reuses the
``sparsepai::threshold_masks`` op (or its reference).
"""

from __future__ import annotations

import torch

from sparsepai.ops._radix import RadixSelection, key_to_value, radix_select
from sparsepai.ops.topk_ref import NAN_MODES, common_dtype, key_bits
from sparsepai.triton import has_triton

_ABS_INF = {
    torch.float16: 0x7C00,
    torch.bfloat16: 0x7F80,
    torch.float32: 0x7F800000,
    torch.float64: 0x7FF0000000000000,
}
_INT_VIEW = {
    torch.float16: torch.int16,
    torch.bfloat16: torch.int16,
    torch.float32: torch.int32,
    torch.float64: torch.int64,
}
BLOCK = 1024

if has_triton():
    import triton
    import triton.language as tl

    @triton.jit
    def _key_hist_kernel(
        x_ptr,  # integer view (int16/int32/int64) of the scores, contiguous
        n,
        hist_ptr,  # int64[2**BITS]
        shift,
        prefix,
        hmask,  # bits of the key above the digit that must equal prefix
        KEY_BITS: tl.constexpr,
        ABS_INF: tl.constexpr,
        BITS: tl.constexpr,
        HAS_PREFIX: tl.constexpr,
        NAN_HIGH: tl.constexpr,
        LARGEST: tl.constexpr,
        BLOCK: tl.constexpr,
    ):
        pid = tl.program_id(0).to(tl.int64)
        offs = pid * BLOCK + tl.arange(0, BLOCK)
        valid = offs < n
        raw = tl.load(x_ptr + offs, mask=valid, other=0).to(tl.int64)
        # All key arithmetic in int64. For 16/32-bit keys the int64 holds the unsigned key; for
        # 64-bit keys it holds the key's bit pattern (right shifts sign-fill, but only bits that
        # the masks below drop).
        if KEY_BITS == 64:
            sign = -9223372036854775807 - 1
            full = -1
        else:
            sign = 1 << (KEY_BITS - 1)
            full = (1 << KEY_BITS) - 1
            raw = raw & full
        absval = raw & (full ^ sign)
        key = tl.where((raw & sign) != 0, raw ^ full, raw | sign)
        key = tl.where(absval == 0, sign, key)  # -0.0 ties with +0.0
        if NAN_HIGH:
            key = tl.where(absval > ABS_INF, full, key)
        else:
            key = tl.where(absval > ABS_INF, 0, key)
        if not LARGEST:
            key = key ^ full
        digit = ((key >> shift) & ((1 << BITS) - 1)).to(tl.int32)
        keep = valid
        if HAS_PREFIX:
            keep = keep & (((key >> (shift + BITS)) & hmask) == prefix)
        h = tl.histogram(digit, 1 << BITS, mask=keep)
        tl.atomic_add(hist_ptr + tl.arange(0, 1 << BITS), h.to(tl.int64))


def _flat_in(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    # Non-contiguous or other-dtype inputs are copied once: the Triton path favours simplicity;
    # the C++/CUDA kernels read strided tensors in place.
    return t.reshape(-1).to(dtype).contiguous().view(_INT_VIEW[dtype])


def key_histogram_triton(scores, shift: int, bits: int, prefix: int, largest: bool, nan: int):
    """Same result as ``torch.ops.sparsepai.key_histogram`` (digit bits <= 16)."""
    if not has_triton():
        raise RuntimeError("sparsepai: Triton is not installed; use the C++ ops instead")
    dtype = common_dtype(s.dtype for s in scores)
    kb = key_bits(dtype)
    if not (1 <= bits <= 16 and shift >= 0 and shift + bits <= kb):
        raise ValueError(f"key_histogram_triton: bad digit shift={shift}, bits={bits} for {kb}-bit keys")
    device = scores[0].device if scores else torch.device("cpu")
    hist = torch.zeros(1 << bits, dtype=torch.int64, device=device)
    top = shift + bits
    has_prefix = top < kb
    hmask = (1 << (kb - top)) - 1 if has_prefix else 0
    for s in scores:
        n = s.numel()
        if n == 0:
            continue
        x = _flat_in(s, dtype)
        grid = (triton.cdiv(n, BLOCK),)
        _key_hist_kernel[grid](
            x, n, hist, shift, prefix, hmask,
            KEY_BITS=kb, ABS_INF=_ABS_INF[dtype], BITS=bits, HAS_PREFIX=has_prefix,
            NAN_HIGH=nan == 2, LARGEST=largest, BLOCK=BLOCK,
        )
    return hist


def select_triton(scores, k: int, largest: bool = True, nan: str = "low") -> RadixSelection:
    """Radix select over Triton histograms (16-bit digits). Needs 1 <= k <= N."""
    code = NAN_MODES[nan]
    dtype = common_dtype(s.dtype for s in scores)

    def hist_fn(shift, bits, prefix):
        h = key_histogram_triton(scores, shift, bits, prefix, largest, code).cpu()
        return h, h

    return radix_select(hist_fn, key_bits(dtype), k, code, largest)


def topk_mask_triton(scores, k: int, *, largest: bool = True, nan: str = "low"):
    """(threshold, masks) like ``sp.topk_mask``, with the histogram passes in Triton."""
    from sparsepai.ops.topk_dist import _local_op, _signed64
    from sparsepai.ops import topk_ref

    code = NAN_MODES[nan]
    dtype = common_dtype(s.dtype for s in scores)
    n = sum(s.numel() for s in scores)
    if not 0 <= k <= n:
        raise ValueError(f"topk_mask_triton: k must be in [0, {n}], got {k}")
    if code == 0 and int(_local_op(scores, "first_nan", topk_ref.first_nan_ref)) >= 0:
        raise ValueError("topk_mask_triton: scores contain NaN; pass nan='low' or 'high'")
    device = scores[0].device if scores else torch.device("cpu")
    if k == 0:
        thr = torch.tensor(float("inf") if largest else float("-inf"), dtype=dtype, device=device)
        return thr, [torch.zeros(s.shape, dtype=torch.bool, device=s.device) for s in scores]
    sel = select_triton(scores, k, largest, nan if code else "low")
    masks = _local_op(scores, "threshold_masks", topk_ref.threshold_masks_ref,
                      _signed64(sel.key), k - sel.count_gt, largest, code)
    thr = torch.tensor(key_to_value(sel.key, largest, code, dtype), dtype=dtype, device=device)
    return thr, list(masks)
