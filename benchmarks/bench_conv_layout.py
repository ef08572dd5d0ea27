"""Which layout the unstructured-sparse convolution should run in, by shape and density.

The kernels (csrc/core/sparse_conv.h) have two layouts: "wide" (the sample outermost, one run
of q per kept weight, no transposing copy, but misaligned loads and some wasted positions) and
"lanes" (the sample innermost: aligned loads, no waste, but transposing layout copies of the
input, the output and both gradients). The copies cost a fixed time per call; the kernels' time
grows with the kept weights per output channel. This script times forward plus backward with
each layout forced (``SPARSEPAI_SPARSE_CONV_LAYOUT``), rounds interleaved, on ResNet-18's CIFAR
convolutions with outputs above 8x8 and VGG-16's one that differs from them, at batch 64 and
32, over densities; the rule in
``sp_conv_prefer_lanes`` (csrc/core/sparse_conv_layout.h) is read off this table.

    python benchmarks/bench_conv_layout.py --out benchmarks/results/sparse_train/conv_layout
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from bench_sparse_train import RESNET18, VGG16, timing_lock  # noqa: E402
from machine import cpu_name  # noqa: E402

OUT = os.path.join(HERE, "results", "sparse_train", "conv_layout")
ENV = "SPARSEPAI_SPARSE_CONV_LAYOUT"


def time_pair(shape, density, batch, rounds, seed=0):
    """Median ms of forward + backward per layout, the layouts interleaved round by round."""
    import torch

    from sparsepai.ops.sparse_conv import sparse_layout

    name, c, o, h, k, s, p = shape
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(o, c, k, k, generator=g) < density
    lay = sparse_layout(mask)
    v = torch.randn(lay.index.numel(), generator=g)
    x = torch.randn(batch, c, h, h, generator=g)
    op = torch.ops.sparsepai
    ws, st, pd, dl = [o, c, k, k], [s, s], [p, p], [1, 1]
    gy = torch.randn_like(op.sparse_conv2d(x, v, *lay[:4], None, ws, st, pd, dl))

    def step():
        op.sparse_conv2d(x, v, *lay[:4], None, ws, st, pd, dl)
        op.sparse_conv2d_backward(gy, x, v, *lay[:4], ws, st, pd, dl, [True, True, False])

    # "auto": the layout the kernels choose themselves (sp_conv_prefer_lanes)
    times = {"wide": [], "lanes": [], "auto": []}
    try:
        for _ in range(rounds):
            for layout in times:
                if layout == "auto":
                    os.environ.pop(ENV, None)
                else:
                    os.environ[ENV] = layout
                step()  # the workspace grows to this layout's size outside the timing
                t0 = time.perf_counter()
                step()
                times[layout].append(time.perf_counter() - t0)
    finally:
        os.environ.pop(ENV, None)
    ms = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    return {"layer": name, "batch": batch, "density": float(lay.index.numel() / mask.numel()),
            "kept_per_row": lay.index.numel() / o, "wide_ms": ms["wide"],
            "lanes_ms": ms["lanes"], "auto_ms": ms["auto"],
            "lanes_over_wide": ms["lanes"] / ms["wide"],
            "auto_over_best": ms["auto"] / min(ms["wide"], ms["lanes"])}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--densities", default="0.05,0.1,0.2,0.35,0.6")
    p.add_argument("--batches", default="64,32")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=OUT)
    args = p.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    dens = [float(v) for v in args.densities.split(",")]
    batches = [int(v) for v in args.batches.split(",")]
    # the shapes whose output plane is above 64 pixels (8x8 and smaller always take lanes), each
    # geometry once
    shapes, seen = [], set()
    for s in RESNET18 + VGG16:
        if (s[3] // s[5]) ** 2 > 64 and s[1:] not in seen:
            seen.add(s[1:])
            shapes.append(s)
    rows = []
    with timing_lock():
        load_before = os.getloadavg()
        for batch in batches:
            for shape in shapes:
                for d in dens:
                    r = time_pair(shape, d, batch, args.rounds)
                    rows.append(r)
                    print(f"{r['layer']:12s} N{batch:<3d} d={d:.2f} kept/row {r['kept_per_row']:6.0f} "
                          f"wide {r['wide_ms']:7.2f} lanes {r['lanes_ms']:7.2f} "
                          f"auto {r['auto_ms']:7.2f} lanes/wide {r['lanes_over_wide']:.2f}", flush=True)
        load_after = os.getloadavg()
    results = {"machine": cpu_name(l3=True), "threads": args.threads, "torch": torch.__version__,
               "command": "python benchmarks/bench_conv_layout.py " + " ".join(
                   shlex.quote(os.path.relpath(a, os.path.dirname(HERE)) if a == args.out else a)
                   for a in sys.argv[1:]),
               "load_before": [round(v, 1) for v in load_before],
               "load_after": [round(v, 1) for v in load_after], "rows": rows}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out + ".json", "w") as f:
        json.dump(results, f, indent=1)
    lines = ["# Sparse convolution: wide or lanes layout", "",
             f"Machine: {results['machine']}; torch threads {args.threads}; load before "
             f"{results['load_before']}, after {results['load_after']}.", "",
             f"Command: `{results['command']}`", "",
             "Forward plus backward (input and weight gradients), median of "
             f"{args.rounds} interleaved rounds. kept/row: kept weights per output channel.", "",
             "auto: the layout the kernels choose (sp_conv_prefer_lanes); auto / best compares "
             "it with the faster forced layout.", "",
             "| layer | batch | density | kept/row | wide ms | lanes ms | auto ms | lanes / wide "
             "| auto / best |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['layer']} | {r['batch']} | {r['density']:.2f} | "
                     f"{r['kept_per_row']:.0f} | {r['wide_ms']:.2f} | {r['lanes_ms']:.2f} | "
                     f"{r['auto_ms']:.2f} | {r['lanes_over_wide']:.2f} | {r['auto_over_best']:.2f} |")
    with open(args.out + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {args.out}.json/.md")


if __name__ == "__main__":
    main()
