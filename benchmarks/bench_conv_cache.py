"""What the sparse convolution's cache blocking gives, pass by pass, by shape and density.

The kernels (csrc/core/sparse_conv.h) keep the windows their gathers read in the L1 cache: the
forward pass and the input gradient sum their rows' kept weights in chunks of source rows
(``sp_src_chunk``), and the weight gradient of dense enough layers goes by input channel
(``sp_run_dot_cols``, chosen by ``sp_dot_by_channel``). ``SPARSEPAI_SPARSE_CONV_CACHE=off``
turns both off. This script times each pass with the blocking on and off, rounds interleaved,
medians, on ResNet-18's and VGG-16's CIFAR convolutions at batch 64 over densities, and reports
off / on (above 1: the blocking is faster).

    python benchmarks/bench_conv_cache.py --out benchmarks/results/sparse_train/conv_cache
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from bench_conv_layout import conv_operands  # noqa: E402
from bench_sparse_train import RESNET18, VGG16, run_header, timing_lock  # noqa: E402

OUT = os.path.join(HERE, "results", "sparse_train", "conv_cache")
ENV = "SPARSEPAI_SPARSE_CONV_CACHE"
PASSES = ("forward", "input_grad", "weight_grad")


def time_passes(shape, density, batch, rounds, seed=0):
    """Median ms of each pass with the blocking on and off, interleaved round by round."""
    import torch

    lay, v, x, gy, (ws, st, pd, dl) = conv_operands(shape, density, batch, seed)
    op = torch.ops.sparsepai
    run = {
        "forward": lambda: op.sparse_conv2d(x, v, *lay[:4], None, ws, st, pd, dl),
        "input_grad": lambda: op.sparse_conv2d_backward(gy, x, v, *lay[:4], ws, st, pd, dl,
                                                        [True, False, False]),
        "weight_grad": lambda: op.sparse_conv2d_backward(gy, x, v, *lay[:4], ws, st, pd, dl,
                                                         [False, True, False]),
    }
    times = {(m, ps): [] for m in ("on", "off") for ps in PASSES}
    try:
        for _ in range(rounds):
            for mode in ("on", "off"):
                if mode == "off":
                    os.environ[ENV] = "off"
                else:
                    os.environ.pop(ENV, None)
                for ps in PASSES:
                    run[ps]()  # the workspace grows outside the timing
                    t0 = time.perf_counter()
                    run[ps]()
                    times[(mode, ps)].append(time.perf_counter() - t0)
    finally:
        os.environ.pop(ENV, None)
    ms = {key: statistics.median(t) * 1e3 for key, t in times.items()}
    row = {"layer": shape[0], "batch": batch,
           "density": float(lay.index.numel() / (ws[0] * ws[1] * ws[2] * ws[3]))}
    for ps in PASSES:
        row[f"{ps}_on_ms"], row[f"{ps}_off_ms"] = ms[("on", ps)], ms[("off", ps)]
        row[f"{ps}_gain"] = ms[("off", ps)] / ms[("on", ps)]
    on = sum(ms[("on", ps)] for ps in PASSES)
    row["all_gain"] = sum(ms[("off", ps)] for ps in PASSES) / on
    return row


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--densities", default="0.75,0.5,0.3,0.2,0.1,0.05")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=OUT)
    args = p.parse_args()
    import torch

    from sparsepai import _io

    torch.set_num_threads(args.threads)
    dens = [float(v) for v in args.densities.split(",")]
    shapes, seen = [], set()  # each geometry once
    for s in RESNET18 + VGG16:
        if s[1:] not in seen:
            seen.add(s[1:])
            shapes.append(s)
    rows = []
    with timing_lock():
        load_before = os.getloadavg()
        for shape in shapes:
            for d in dens:
                r = time_passes(shape, d, args.batch, args.rounds)
                rows.append(r)
                print(f"{r['layer']:12s} d={d:.2f} " + " ".join(
                    f"{ps} {r[f'{ps}_off_ms']:.2f}/{r[f'{ps}_on_ms']:.2f}"
                    f" ({r[f'{ps}_gain']:.2f}x)" for ps in PASSES), flush=True)
        load_after = os.getloadavg()
    results = {**run_header("bench_conv_cache.py", args.out, args.threads, load_before,
                            load_after),
               "batch": args.batch, "rounds": args.rounds, "rows": rows}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    _io.atomic_write_json(args.out + ".json", results)
    lines = ["# Sparse convolution: what the cache blocking gives", "",
             f"Machine: {results['machine']}; torch threads {args.threads}; batch {args.batch}; "
             f"load before {results['load_before']}, after {results['load_after']}.", "",
             f"Command: `{results['command']}`", "",
             f"Each pass's time without / with the cache blocking (median of {args.rounds} "
             "interleaved rounds, ms) and its ratio (above 1: the blocking is faster); uniform "
             "random masks.", "",
             "| layer | density | forward | input gradient | weight gradient | all three |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        cells = [f"{r[f'{ps}_off_ms']:.2f} / {r[f'{ps}_on_ms']:.2f} ({r[f'{ps}_gain']:.2f}x)"
                 for ps in PASSES]
        lines.append(f"| {r['layer']} | {r['density']:.2f} | " + " | ".join(cells)
                     + f" | {r['all_gain']:.2f}x |")
    gains = [r["all_gain"] for r in rows]
    lines += ["", f"All three passes: {min(gains):.2f}x to {max(gains):.2f}x over the "
              f"{len(rows)} cells."]
    _io.atomic_write_bytes(args.out + ".md", ("\n".join(lines) + "\n").encode())
    print(f"wrote {args.out}.json/.md")


if __name__ == "__main__":
    main()
