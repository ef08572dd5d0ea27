"""MSB-first radix select driven by a histogram callback.

Shared by the distributed path (local C++ histograms, all-reduced) and the Triton path. The
callback returns (histogram used for the decision, this process's own histogram); the second
lets each rank count its own keys above and at the threshold without another pass.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import torch

from sparsepai.ops.topk_ref import _FORMATS

DIGIT_BITS = 16


class RadixSelection(NamedTuple):
    key: int  # the k-th largest key (unsigned)
    count_gt: int  # keys strictly above it, over all data
    local_gt: int  # ... over this process's data
    local_eq: int  # keys equal to it on this process
    nan_count: int  # NaN keys over all data (valid whenever the first digit is 16 bits wide)


def signed64(u: int) -> int:
    """An unsigned 64-bit key as the int64 with its bits (how keys pass through ``int`` op
    arguments)."""
    return u - (1 << 64) if u >= 1 << 63 else u


def nan_key(nan: int, largest: bool, bits: int) -> int:
    full = (1 << bits) - 1
    k = full if nan == 2 else 0
    return k if largest else full ^ k


def radix_select(
    hist_fn: Callable[[int, int, int], tuple[torch.Tensor, torch.Tensor]],
    bits_total: int,
    k: int,
    nan: int,
    largest: bool,
) -> RadixSelection:
    """Find the k-th largest key (1 <= k <= N) with ceil(bits_total / 16) histogram calls."""
    prefix, count_gt, local_gt, local_eq, nans = 0, 0, 0, 0, 0
    top = bits_total
    while top > 0:
        bits = min(DIGIT_BITS, top)
        shift = top - bits
        glob, loc = hist_fn(shift, bits, prefix)
        glob = glob.tolist()
        loc = loc.tolist()
        if top == bits_total:
            nans = glob[(nan_key(nan, largest, bits_total) >> shift) & ((1 << bits) - 1)]
        b = len(glob) - 1
        while b > 0 and count_gt + glob[b] < k:
            count_gt += glob[b]
            local_gt += loc[b]
            b -= 1
        local_eq = loc[b]
        prefix = (prefix << bits) | b
        top = shift
    return RadixSelection(prefix, count_gt, local_gt, local_eq, nans)


def key_to_value(key: int, largest: bool, nan: int, dtype: torch.dtype) -> float:
    """The value of a key (inverse of the key transform); NaN keys give -inf/+inf."""
    ity, bits, sign, _ = _FORMATS[dtype]
    full = (1 << bits) - 1
    if key == nan_key(nan, largest, bits) and nan in (1, 2):
        return float("inf") if nan == 2 else float("-inf")
    if not largest:
        key ^= full
    raw = key & (full ^ sign) if key & sign else (~key) & full
    signed = raw - (1 << bits) if raw & sign else raw
    return float(torch.tensor(signed, dtype=torch.int64).to(ity).view(dtype))
