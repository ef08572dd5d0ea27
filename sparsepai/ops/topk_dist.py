"""Distributed global top-k: every rank holds a shard of the scores.

Ranks never exchange scores: they all-reduce 16-bit-digit key histograms (2 passes for float32,
1 for 16-bit dtypes, 4 for float64, each a 65536-entry int64 all-reduce), then all-gather one
count per rank so the ties at the threshold are kept in rank order. Each rank then writes its
own masks.
"""

from __future__ import annotations

import torch

from sparsepai.ops import dispatch
from sparsepai.ops._radix import key_to_value, radix_select, signed64
from sparsepai.ops.topk_ref import common_dtype, key_bits

_DTYPE_CODES = {torch.float16: 0, torch.bfloat16: 1, torch.float32: 2, torch.float64: 3}
_CODE_DTYPES = {v: k for k, v in _DTYPE_CODES.items()}


def topk_distributed(scores, k, largest, nan, group, want_masks, transform=0):
    import torch.distributed as dist

    rank = dist.get_rank(group)
    world = dist.get_world_size(group)
    comm_dev = torch.device("cuda", torch.cuda.current_device()) if (
        dist.get_backend(group) == "nccl"
    ) else torch.device("cpu")
    out_dev = scores[0].device if scores else comm_dev

    def gather(values):
        t = torch.tensor(values, dtype=torch.int64, device=comm_dev)
        out = [torch.empty_like(t) for _ in range(world)]
        dist.all_gather(out, t, group=group)
        return [o.tolist() for o in out]

    # One small exchange: sizes, dtypes (as a bitmask) and the first NaN per rank.
    dmask = 0
    for s in scores:
        dmask |= 1 << _DTYPE_CODES[s.dtype]
    dev = scores[0].device.type if scores else "cpu"
    first_nan = int(dispatch.call("first_nan", dev, scores)) if nan == 0 and scores else -1
    info = gather([sum(s.numel() for s in scores), dmask, first_nan, k, int(largest), nan,
                   transform])
    for r, row in enumerate(info):  # a rank with other arguments would silently select wrongly
        if row[3:] != info[0][3:]:
            raise ValueError(f"sparsepai.topk_mask: every rank of the group must pass the same "
                             f"k, largest, nan and transform; rank {r} passed (k={row[3]}, "
                             f"largest={bool(row[4])}, nan={row[5]}, transform={row[6]}), rank 0 "
                             f"(k={info[0][3]}, largest={bool(info[0][4])}, nan={info[0][5]}, "
                             f"transform={info[0][6]})")
    n = sum(r[0] for r in info)
    if not 0 <= k <= n:
        raise ValueError(f"sparsepai.topk_mask: k must be in [0, {n}] (all ranks' scores), got {k}")
    for r, row in enumerate(info):
        if row[2] >= 0:
            raise ValueError(f"sparsepai.topk_mask: scores[{row[2]}] on rank {r} contains NaN; "
                             "pass nan='low' or nan='high' to rank NaN scores")
    all_mask = 0
    for row in info:
        all_mask |= row[1]
    dtype = common_dtype(_CODE_DTYPES[c] for c in range(4) if all_mask >> c & 1)
    if scores and common_dtype(s.dtype for s in scores) != dtype:
        raise ValueError(
            "sparsepai.topk_mask: with group=, every rank must hold scores of the same dtypes "
            f"(this rank compares in {common_dtype(s.dtype for s in scores)}, the group in {dtype})"
        )
    inf = torch.tensor(float("inf") if largest else float("-inf"), dtype=dtype, device=out_dev)
    if k == 0:
        masks = [torch.zeros(s.shape, dtype=torch.bool, device=s.device) for s in scores]
        return inf, masks

    bits_total = key_bits(dtype)

    def hist_fn(shift, bits, prefix):
        if scores:
            local = dispatch.call("key_histogram", dev, scores, shift, bits, signed64(prefix),
                                  largest, nan, transform)
        else:
            local = torch.zeros(1 << bits, dtype=torch.int64)
        glob = local.to(comm_dev, copy=True)
        dist.all_reduce(glob, group=group)
        return glob, local

    sel = radix_select(hist_fn, bits_total, k, nan, largest)
    thr = torch.tensor(key_to_value(sel.key, largest, nan, dtype), dtype=dtype, device=out_dev)
    if not want_masks:
        return thr, []
    eqs = [row[0] for row in gather([sel.local_eq])]
    budget = max(0, k - sel.count_gt - sum(eqs[:rank]))
    budget = min(budget, sel.local_eq)
    if not scores:
        return thr, []
    masks = dispatch.call("threshold_masks", dev, scores, signed64(sel.key), budget, largest,
                          nan, transform)
    return thr, list(masks)
