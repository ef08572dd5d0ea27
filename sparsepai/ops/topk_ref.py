"""Pure-PyTorch references of the top-k ops: the test oracles, and the fallback when the compiled
extension is absent.

They are written independently of the kernels: ``topk_mask_ref`` concatenates and sorts (stable,
so ties keep position order), which is exactly the memory-hungry approach the kernels avoid.
The key helpers mirror csrc/core/radix_keys.h in plain tensor arithmetic.
"""

from __future__ import annotations

import torch

NAN_MODES = {"error": 0, "low": 1, "high": 2}
# What the ops rank: the scores, or their magnitudes (the kernels clear each element's sign bit
# before its key; the references take ``.abs()``, a copy).
TRANSFORMS = {"none": 0, "abs": 1}


def _transformed(scores, transform: int):
    return [s.abs() for s in scores] if transform == 1 else list(scores)

# dtype -> (integer view dtype, key bits, sign bit, |inf| bits)
_FORMATS = {
    torch.float16: (torch.int16, 16, 0x8000, 0x7C00),
    torch.bfloat16: (torch.int16, 16, 0x8000, 0x7F80),
    torch.float32: (torch.int32, 32, 0x80000000, 0x7F800000),
    torch.float64: (torch.int64, 64, 1 << 63, 0x7FF0000000000000),
}


def nan_code(nan) -> int:
    """The op argument for a ``nan`` policy: its name (``NAN_MODES``) or the code itself."""
    return NAN_MODES[nan] if isinstance(nan, str) else int(nan)


def common_dtype(dtypes) -> torch.dtype:
    """The dtype all scores of a call are compared in (the kernels' key format)."""
    dtypes = list(dtypes)
    if not dtypes:
        return torch.float32
    if all(d == dtypes[0] for d in dtypes):
        return dtypes[0]
    return torch.float64 if torch.float64 in dtypes else torch.float32


def key_bits(dtype: torch.dtype) -> int:
    return _FORMATS[dtype][1]


def _to_signed(u: int, bits: int) -> int:
    return u - (1 << bits) if u >= 1 << (bits - 1) else u


def order_keys_ref(t: torch.Tensor, nan: int, largest: bool, dtype: torch.dtype) -> torch.Tensor:
    """Order-preserving keys of ``t`` (flattened row-major) in format ``dtype``, as int64.

    For 16/32-bit formats the int64 holds the unsigned key. For 64-bit keys it holds the key's
    bit pattern, so it is negative when the top bit is set (compare with ``key_lt`` helpers, not
    with ``<``).
    """
    x = t.reshape(-1).to(dtype)
    ity, bits, sign, absinf = _FORMATS[dtype]
    raw = x.view(ity).to(torch.int64)
    mask = (1 << bits) - 1 if bits < 64 else -1
    raw = raw & mask if bits < 64 else raw
    sign_s = _to_signed(sign, 64) if bits == 64 else sign
    absval = raw & (~sign_s if bits == 64 else (mask ^ sign))
    is_nan = torch.isnan(x)
    is_zero = absval == 0
    neg = (raw & sign_s) != 0
    inv = ~raw & mask if bits < 64 else ~raw
    key = torch.where(neg, inv, raw | sign_s)
    key = torch.where(is_zero, torch.full_like(key, sign_s), key)
    nan_key = mask if nan == 2 else 0
    key = torch.where(is_nan, torch.full_like(key, nan_key), key)
    if not largest:
        key = ~key & mask if bits < 64 else ~key
    return key


def _unsigned_order(key: torch.Tensor, bits: int) -> torch.Tensor:
    """int64 values that order like the unsigned keys (flip the top bit of 64-bit keys)."""
    if bits < 64:
        return key
    return key ^ torch.iinfo(torch.int64).min


def key_histogram_ref(scores, shift: int, bits: int, prefix: int, largest: bool, nan: int,
                      transform: int = 0):
    scores = _transformed(scores, transform)
    dtype = common_dtype(s.dtype for s in scores)
    kb = key_bits(dtype)
    hist = torch.zeros(1 << bits, dtype=torch.int64)
    top = shift + bits
    for s in scores:
        if s.numel() == 0:
            continue
        key = order_keys_ref(s.cpu(), nan, largest, dtype)
        if top < kb:
            high = (key >> top) & ((1 << (kb - top)) - 1) if kb == 64 else key >> top
            sel = high == prefix
            key = key[sel]
        digit = (key >> shift) & ((1 << bits) - 1)
        hist += torch.bincount(digit, minlength=1 << bits)
    return hist


def _keys_cat(scores, nan, largest):
    dtype = common_dtype(s.dtype for s in scores)
    kb = key_bits(dtype)
    keys = [_unsigned_order(order_keys_ref(s.cpu(), nan, largest, dtype), kb) for s in scores]
    return keys, dtype, kb


def threshold_masks_ref(scores, threshold_key: int, budget: int, largest: bool, nan: int,
                        transform: int = 0):
    scores = _transformed(scores, transform)
    keys, _, kb = _keys_cat(scores, nan, largest)
    t = _to_signed(threshold_key & ((1 << 64) - 1), 64) if kb == 64 else threshold_key
    t = t ^ torch.iinfo(torch.int64).min if kb == 64 else t
    out = []
    left = budget
    for s, k in zip(scores, keys):
        m = k > t
        eq = k == t
        csum = torch.cumsum(eq.to(torch.int64), 0)
        m |= eq & (csum <= left)
        left = max(0, left - int(eq.sum()))
        out.append(m.reshape(s.shape).to(s.device))
    return out


def first_nan_ref(scores) -> torch.Tensor:
    for i, s in enumerate(scores):
        if bool(torch.isnan(s).any()):
            return torch.tensor(i, dtype=torch.int64)
    return torch.tensor(-1, dtype=torch.int64)


def topk_mask_ref(scores, k: int, largest: bool = True, nan="error", transform: int = 0):
    """(threshold, masks) by concatenation and a stable sort: the oracle.

    ``nan`` is a policy name or its code (the op's argument); ``transform`` 1 ranks ``|scores|``.

    Sort order: NaN handling per ``nan``, -0.0 == +0.0, ties by position (list order, then
    row-major flat index), which a stable sort of the concatenation gives directly.
    """
    code = nan_code(nan)
    scores = _transformed(scores, transform)
    dtype = common_dtype(s.dtype for s in scores)
    device = scores[0].device if len(scores) else torch.device("cpu")
    n = sum(s.numel() for s in scores)
    if not 0 <= k <= n:
        raise ValueError(f"topk_mask_ref: k must be in [0, {n}], got {k}")
    inf = float("inf") if largest else float("-inf")
    if code == 0:
        i = int(first_nan_ref(scores))
        if i >= 0:
            raise ValueError(f"sparsepai: scores[{i}] contains NaN; pass nan='low' or "
                             "nan='high' to rank NaN scores")
    flat = [s.reshape(-1).to(torch.float64).cpu() for s in scores]
    cat = torch.cat(flat) if flat else torch.zeros(0, dtype=torch.float64)
    isnan = torch.isnan(cat)
    vals = torch.where(isnan, torch.zeros_like(cat), cat) + 0.0  # -0.0 + 0.0 == +0.0
    # rank class: NaN placed below or above every number
    cls = torch.zeros_like(cat, dtype=torch.int64)
    if code == 2:
        cls[isnan] = 1
    elif code == 1:
        cls[isnan] = -1
    # lexicographic (cls, value) by two stable sorts; descending for largest
    order = torch.sort(vals, descending=largest, stable=True).indices
    order = order[torch.sort(cls[order], descending=largest, stable=True).indices]
    keep = torch.zeros(n, dtype=torch.bool)
    keep[order[:k]] = True
    masks, off = [], 0
    for s in scores:
        masks.append(keep[off : off + s.numel()].reshape(s.shape).to(device))
        off += s.numel()
    if k == 0:
        thr = inf
    else:
        j = order[k - 1]
        if isnan[j]:
            thr = float("inf") if code == 2 else float("-inf")
        else:
            thr = float(vals[j])
    return torch.tensor(thr, dtype=dtype, device=device), masks


def kth_largest_ref(scores, k: int, largest: bool = True, nan="error", transform: int = 0):
    return topk_mask_ref(scores, k, largest, nan, transform)[0]
