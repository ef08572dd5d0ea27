"""``sparsepai bench``: time ``sp.topk_mask`` against ``torch.kthvalue(torch.cat(...))``."""

from __future__ import annotations

import argparse
import statistics
import time

from sparsepai.cli import common

HELP = "time sp.topk_mask against torch.kthvalue(cat)"
DESCRIPTION = "Median times at the given sizes (k = N/10)."


MAX_SIZE = 10**10  # 40 GB of float32 scores, and as much again for kthvalue's copy


def _size(text: str) -> int:
    try:
        v = int(float(text))
    except OverflowError:  # "inf"
        v = MAX_SIZE + 1
    if v > MAX_SIZE:
        raise argparse.ArgumentTypeError(f"a size must be at most {MAX_SIZE:.0e} scores (each "
                                          f"is allocated twice), got {text}")
    return common.positive_int(str(v))


def add_arguments(p) -> None:
    p.add_argument("--sizes", nargs="+", type=_size, default=[10**6, 10**7],
                   help="numbers of scores (default: 1e6 1e7)")
    p.add_argument("--tensors", type=common.positive_int, default=60,
                   help="tensors the scores are split into")
    p.add_argument("--repeats", type=common.positive_int, default=3,
                   help="timing repeats, median (default: 3)")


def _timed(fn, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def run(args) -> int:
    import torch

    from sparsepai.ops.topk import topk_mask

    print(f"{'N':>14}{'topk_mask':>12}{'kthvalue(cat)':>15}{'ratio':>8}")
    for n in args.sizes:
        g = torch.Generator().manual_seed(0)
        parts = [t.abs() for t in torch.randn(n, generator=g).chunk(args.tensors)]
        k = n // 10
        t_sp = _timed(lambda: topk_mask(parts, k), args.repeats)
        t_kv = _timed(lambda: torch.kthvalue(torch.cat(parts), n - k + 1), args.repeats)
        print(f"{n:>14,}{t_sp:>11.3f}s{t_kv:>14.3f}s{t_kv / t_sp:>7.1f}x")
    return 0
