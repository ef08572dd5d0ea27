"""The top-k ops as Triton kernels: the CUDA backend of a build without the C++ CUDA kernels.

Each function takes the arguments of its op's schema (csrc/ops.cpp) and returns what the op
returns; ``sparsepai.ops.dispatch`` chooses them. ``topk_mask_triton`` = radix select over
:func:`key_histogram_triton` passes (16-bit digits, ``sparsepai.ops._radix``), then one mask pass
(:func:`threshold_masks_triton`). On the CPU they run under ``TRITON_INTERPRET=1`` (how the tests
check them through ``sp.topk_mask``).

The histogram adds one atomic per key into the 2**16 global bins rather than a per-block
``tl.histogram`` (2**16 bins do not fit a block's registers). Ties at the threshold are kept in
position order: a tie-count pass per block, an exclusive scan of the block counts, then the mask
pass keeps a block's ties while the running count stays within the budget; when every tie is
kept (the common case) the count pass is skipped. Non-contiguous or mixed-dtype inputs are copied
once per pass (the C++ kernels read strided tensors in place).
"""

from __future__ import annotations

import torch

from sparsepai.ops._radix import key_to_value, radix_select, signed64
from sparsepai.ops.topk_ref import common_dtype, key_bits, nan_code
from sparsepai.ops._triton import has_triton, require_triton

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
_TIES_NONE, _TIES_ALL, _TIES_BUDGET = 0, 1, 2

if has_triton():
    import triton
    import triton.language as tl

    @triton.jit
    def _keys(x_ptr, offs, valid, KEY_BITS: tl.constexpr, ABS_INF: tl.constexpr,
              NAN_HIGH: tl.constexpr, LARGEST: tl.constexpr, ABS: tl.constexpr):
        """Order-preserving keys (csrc/core/radix_keys.h) of the scores at ``offs`` (of their
        magnitudes when ``ABS``: the sign bit cleared first), as int64: the unsigned key for
        16/32-bit formats, the key's bit pattern for 64-bit ones (right shifts then sign-fill,
        but only into bits the callers mask off)."""
        raw = tl.load(x_ptr + offs, mask=valid, other=0).to(tl.int64)
        if KEY_BITS == 64:
            sign = -9223372036854775807 - 1
            full = -1
        else:
            sign = 1 << (KEY_BITS - 1)
            full = (1 << KEY_BITS) - 1
            raw = raw & full
        if ABS:
            raw = raw & (full ^ sign)
        absval = raw & (full ^ sign)
        key = tl.where((raw & sign) != 0, raw ^ full, raw | sign)
        key = tl.where(absval == 0, sign, key)  # -0.0 ties with +0.0
        if NAN_HIGH:
            key = tl.where(absval > ABS_INF, full, key)
        else:
            key = tl.where(absval > ABS_INF, 0, key)
        if not LARGEST:
            key = key ^ full
        return key

    @triton.jit
    def _key_hist_kernel(x_ptr, n, hist_ptr, shift, prefix, hmask, KEY_BITS: tl.constexpr,
                         ABS_INF: tl.constexpr, BITS: tl.constexpr, HAS_PREFIX: tl.constexpr,
                         NAN_HIGH: tl.constexpr, LARGEST: tl.constexpr, ABS: tl.constexpr,
                         BLOCK: tl.constexpr):
        offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        valid = offs < n
        key = _keys(x_ptr, offs, valid, KEY_BITS, ABS_INF, NAN_HIGH, LARGEST, ABS)
        digit = (key >> shift) & ((1 << BITS) - 1)
        keep = valid
        if HAS_PREFIX:
            keep = keep & (((key >> (shift + BITS)) & hmask) == prefix)
        tl.atomic_add(hist_ptr + digit, tl.full((BLOCK,), 1, tl.int64), mask=keep)

    @triton.jit
    def _cmp_keys(x_ptr, offs, valid, KEY_BITS: tl.constexpr, ABS_INF: tl.constexpr,
                  NAN_HIGH: tl.constexpr, LARGEST: tl.constexpr, ABS: tl.constexpr):
        """Keys that compare with signed ``<`` like the unsigned keys do."""
        key = _keys(x_ptr, offs, valid, KEY_BITS, ABS_INF, NAN_HIGH, LARGEST, ABS)
        if KEY_BITS == 64:
            key = key ^ (-9223372036854775807 - 1)
        return key

    @triton.jit
    def _tie_count_kernel(x_ptr, n, t, counts_ptr, KEY_BITS: tl.constexpr,
                          ABS_INF: tl.constexpr, NAN_HIGH: tl.constexpr, LARGEST: tl.constexpr,
                          ABS: tl.constexpr, BLOCK: tl.constexpr):
        pid = tl.program_id(0)
        offs = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        valid = offs < n
        key = _cmp_keys(x_ptr, offs, valid, KEY_BITS, ABS_INF, NAN_HIGH, LARGEST, ABS)
        tl.store(counts_ptr + pid, tl.sum((valid & (key == t)).to(tl.int64), 0))

    @triton.jit
    def _mask_kernel(x_ptr, n, t, out_ptr, before_ptr, budget, KEY_BITS: tl.constexpr,
                     ABS_INF: tl.constexpr, NAN_HIGH: tl.constexpr, LARGEST: tl.constexpr,
                     ABS: tl.constexpr, TIES: tl.constexpr, BLOCK: tl.constexpr):
        pid = tl.program_id(0)
        offs = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        valid = offs < n
        key = _cmp_keys(x_ptr, offs, valid, KEY_BITS, ABS_INF, NAN_HIGH, LARGEST, ABS)
        keep = key > t
        if TIES == 1:
            keep = keep | (key == t)
        if TIES == 2:
            eq = valid & (key == t)
            # ties of earlier blocks and tensors, plus this block's up to and including this one
            rank = tl.load(before_ptr + pid) + tl.cumsum(eq.to(tl.int64), 0)
            keep = keep | (eq & (rank <= budget))
        tl.store(out_ptr + offs, keep.to(tl.uint8), mask=valid)


def _flat_in(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return t.reshape(-1).to(dtype).contiguous().view(_INT_VIEW[dtype])


def _consts(dtype, nan, largest, transform):
    return dict(KEY_BITS=key_bits(dtype), ABS_INF=_ABS_INF[dtype], NAN_HIGH=nan == 2,
                LARGEST=bool(largest), ABS=transform == 1, BLOCK=BLOCK)


def key_histogram_triton(scores, shift: int, bits: int, prefix: int, largest: bool, nan: int,
                         transform: int = 0):
    """``sparsepai::key_histogram``: int64[2**bits] counts of one digit of the keys whose bits
    above the digit equal ``prefix`` (digit bits <= 16)."""
    require_triton()
    dtype = common_dtype(s.dtype for s in scores)
    kb = key_bits(dtype)
    if not (1 <= bits <= 16 and shift >= 0 and shift + bits <= kb):
        raise ValueError(f"key_histogram_triton: bad digit shift={shift}, bits={bits} for "
                         f"{kb}-bit keys")
    device = scores[0].device if scores else torch.device("cpu")
    hist = torch.zeros(1 << bits, dtype=torch.int64, device=device)
    top = shift + bits
    has_prefix = top < kb
    hmask = (1 << (kb - top)) - 1 if has_prefix else 0
    # the prefix as the int64 the kernel compares against (64-bit keys: top digit bit patterns)
    prefix = signed64(prefix & ((1 << 64) - 1))
    hmask = signed64(hmask)
    for s in scores:
        n = s.numel()
        if n:
            _key_hist_kernel[(triton.cdiv(n, BLOCK),)](
                _flat_in(s, dtype), n, hist, shift, prefix, hmask, BITS=bits,
                HAS_PREFIX=has_prefix, **_consts(dtype, nan, largest, transform))
    return hist


def _write_masks(scores, dtype, key: int, budget: int, eq_total, largest, nan, transform):
    """Masks ``key > key_T`` plus the first ``budget`` ties in position order; ``eq_total``: the
    number of ties if known (None: count them when it matters)."""
    kb = key_bits(dtype)
    t = signed64(key ^ (1 << 63)) if kb == 64 else key
    consts = _consts(dtype, nan, largest, transform)
    flats = [_flat_in(s, dtype) if s.numel() else None for s in scores]
    blocks = [triton.cdiv(s.numel(), BLOCK) for s in scores]
    before = [None] * len(scores)
    ties = _TIES_NONE if budget <= 0 else _TIES_ALL
    if budget > 0 and (eq_total is None or budget < eq_total):
        counts = [torch.empty(b, dtype=torch.int64, device=s.device)
                  for s, b in zip(scores, blocks)]
        for x, c, s in zip(flats, counts, scores):
            if x is not None:
                _tie_count_kernel[(c.numel(),)](x, s.numel(), t, c, **consts)
        allc = torch.cat(counts) if counts else torch.zeros(0, dtype=torch.int64)
        if int(allc.sum()) > budget:
            ties = _TIES_BUDGET
            excl = torch.cumsum(allc, 0) - allc
            before = list(torch.split(excl, blocks))
    out = []
    for x, s, b, bf in zip(flats, scores, blocks, before):
        m = torch.empty(s.shape, dtype=torch.bool, device=s.device)
        if x is not None:
            _mask_kernel[(b,)](x, s.numel(), t, m.view(torch.uint8), bf if bf is not None else x,
                               budget, TIES=ties, **consts)
        out.append(m)
    return out


def threshold_masks_triton(scores, threshold_key: int, budget: int, largest: bool, nan: int,
                           transform: int = 0):
    """``sparsepai::threshold_masks``: masks of ``key > threshold_key`` plus the first
    ``budget`` ties in position order."""
    require_triton()
    dtype = common_dtype(s.dtype for s in scores)
    key = threshold_key & ((1 << key_bits(dtype)) - 1)
    return _write_masks(scores, dtype, key, budget, None, largest, nan, transform)


def first_nan_triton(scores) -> torch.Tensor:
    """``sparsepai::first_nan`` on the device, in plain torch (one reduction per tensor, one
    synchronisation): int64 0-d index of the first tensor holding a NaN, or -1."""
    if not scores:
        return torch.tensor(-1, dtype=torch.int64)
    has = torch.stack([torch.isnan(s).any() if s.numel() else
                       torch.zeros((), dtype=torch.bool, device=s.device) for s in scores])
    i = int(torch.argmax(has.to(torch.int8)))
    return torch.tensor(i if bool(has[i]) else -1, dtype=torch.int64)


def _select(scores, k, largest, nan, transform, op):
    """(selection, dtype) for 1 <= k <= N; NaN scores under nan=0 raise naming the tensor."""
    require_triton()
    dtype = common_dtype(s.dtype for s in scores)
    # under nan=0 NaN keys sort lowest, as with nan=1; the selection counts them for free
    code = nan if nan else 1

    def hist_fn(shift, bits, prefix):
        h = key_histogram_triton(scores, shift, bits, prefix, largest, code, transform)
        return h, h

    sel = radix_select(hist_fn, key_bits(dtype), k, code, largest)
    if nan == 0 and sel.nan_count:
        _raise_nan(scores, op)
    return sel, dtype, code


def _raise_nan(scores, op):
    i = int(first_nan_triton(scores))
    raise ValueError(f"sparsepai.{op}: scores[{i}] contains NaN; pass nan='low' or nan='high' "
                     "to rank NaN scores")


def _empty(scores, largest, nan, op):
    """The k == 0 threshold (and the NaN check the selection would have made)."""
    if nan == 0 and int(first_nan_triton(scores)) >= 0:
        _raise_nan(scores, op)
    dtype = common_dtype(s.dtype for s in scores)
    device = scores[0].device if scores else torch.device("cpu")
    return torch.tensor(float("inf") if largest else float("-inf"), dtype=dtype, device=device)


def topk_mask_triton(scores, k: int, largest: bool, nan, transform: int = 0):
    """``sparsepai::topk_mask``: (threshold, masks) for 0 <= k <= N."""
    nan = nan_code(nan)
    if k == 0:
        return _empty(scores, largest, nan, "topk_mask"), [
            torch.zeros(s.shape, dtype=torch.bool, device=s.device) for s in scores]
    sel, dtype, code = _select(scores, k, largest, nan, transform, "topk_mask")
    masks = _write_masks(scores, dtype, sel.key, k - sel.count_gt, sel.local_eq, largest, code,
                         transform)
    thr = key_to_value(sel.key, largest, code, dtype)
    return torch.tensor(thr, dtype=dtype, device=scores[0].device), masks


def kth_largest_triton(scores, k: int, largest: bool, nan, transform: int = 0):
    """``sparsepai::kth_largest``: the threshold of :func:`topk_mask_triton` alone."""
    nan = nan_code(nan)
    if k == 0:
        return _empty(scores, largest, nan, "kth_largest")
    sel, dtype, code = _select(scores, k, largest, nan, transform, "kth_largest")
    thr = key_to_value(sel.key, largest, code, dtype)
    return torch.tensor(thr, dtype=dtype, device=scores[0].device)
