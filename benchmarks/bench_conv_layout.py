"""Which layout the unstructured-sparse convolution should run in, by shape and density.

The kernels (csrc/core/sparse_conv.h) have two layouts: "wide" (the sample outermost, one run
of q per kept weight, no transposing copy, but misaligned loads and some wasted positions) and
"lanes" (the sample innermost: aligned loads, no waste, but transposing layout copies of the
input, the output and both gradients). The copies cost a fixed time per call; the kernels' time
grows with the kept weights per output channel. This script times forward plus backward with
each layout forced (``SPARSEPAI_SPARSE_CONV_LAYOUT``), rounds interleaved, on ResNet-18's CIFAR
convolutions with outputs above 8x8 and VGG-16's one that differs from them, at batch 64 and
32, over densities. The machine's state moves the crossing (the copies are bound by memory
bandwidth), so the threshold of ``sp_conv_prefer_lanes`` (csrc/core/sparse_conv_layout.h) is
scored on several runs with ``--choose`` and taken by its worst cell.

    python benchmarks/bench_conv_layout.py --out benchmarks/results/sparse_train/conv_layout
    python benchmarks/bench_conv_layout.py --out benchmarks/results/sparse_train/conv_layout_rule \
        --choose benchmarks/results/sparse_train/conv_layout*.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from bench_sparse_train import RESNET18, VGG16, run_header, timing_lock  # noqa: E402

OUT = os.path.join(HERE, "results", "sparse_train", "conv_layout")
ENV = "SPARSEPAI_SPARSE_CONV_LAYOUT"


def conv_operands(shape, density, batch, seed=0):
    """For a shape of bench_sparse_train's tables: the layout of a uniform random keep-mask at
    `density`, its values, an input, an output gradient and the op's geometry arguments
    (weight shape, stride, padding, dilation)."""
    import torch

    from sparsepai.ops.sparse_conv import sparse_layout

    _, c, o, h, k, s, p = shape
    g = torch.Generator().manual_seed(seed)
    lay = sparse_layout(torch.rand(o, c, k, k, generator=g) < density)
    v = torch.randn(lay.index.numel(), generator=g)
    x = torch.randn(batch, c, h, h, generator=g)
    geo = ([o, c, k, k], [s, s], [p, p], [1, 1])
    gy = torch.randn_like(torch.ops.sparsepai.sparse_conv2d(x, v, *lay[:4], None, *geo))
    return lay, v, x, gy, geo


def time_pair(shape, density, batch, rounds, seed=0):
    """Median ms of forward + backward per layout, the layouts interleaved round by round."""
    import torch

    name, o = shape[0], shape[2]
    lay, v, x, gy, (ws, st, pd, dl) = conv_operands(shape, density, batch, seed)
    op = torch.ops.sparsepai

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
    return {"layer": name, "batch": batch,
            "density": float(lay.index.numel() / (ws[0] * ws[1] * ws[2] * ws[3])),
            "kept_per_row": lay.index.numel() / o, "wide_ms": ms["wide"],
            "lanes_ms": ms["lanes"], "auto_ms": ms["auto"],
            "lanes_over_wide": ms["lanes"] / ms["wide"],
            "auto_over_best": ms["auto"] / min(ms["wide"], ms["lanes"])}


def _geometry(name):
    """(output pixels, stride) of a shape of bench_sparse_train's tables."""
    _, c, o, h, k, st, pad = next(s for s in RESNET18 + VGG16 if s[0] == name)
    out = (h + 2 * pad - k) // st + 1
    return out * out, st


def choose(paths, out):
    """The candidate thresholds of sp_conv_prefer_lanes' last clause (lanes from `kept` kept
    weights per output channel, times the stride; its other clauses as in the kernels), each
    scored on every run by the time of the layout it picks over the faster forced layout: the
    worst cell and the mean per run, and the worst over all runs."""
    from sparsepai import _io

    runs = []
    for path in paths:
        with open(path) as f:
            runs.append((os.path.basename(path), json.load(f)))
    lines = ["# Sparse convolution layout: the threshold", "",
             "Command: `python benchmarks/bench_conv_layout.py --choose " + " ".join(
                 os.path.relpath(p, os.path.dirname(HERE)) for p in paths) + "`", "",
             "Per candidate: the picked layout's time over the faster forced layout's, worst "
             "cell / mean over the cells of each run; the kernels use the threshold whose "
             "worst cell over all runs is smallest (ties: the smallest worst mean).", "",
             "| lanes from kept/row (x stride) | " + " | ".join(n for n, _ in runs)
             + " | worst of all runs |", "|---|" + "---|" * (len(runs) + 1)]
    best = None
    for kept in (0, 8, 16, 24, 32, 48, 64, 96, 128, 192):
        cells, worst, mean = [], 0.0, 0.0
        for _, r in runs:
            ratios = []
            for x in r["rows"]:
                px, st = _geometry(x["layer"])
                lanes = px <= 64 or (px <= 256 and st == 1) or x["kept_per_row"] >= kept * st
                ratios.append((x["lanes_ms"] if lanes else x["wide_ms"])
                              / min(x["lanes_ms"], x["wide_ms"]))
            cells.append(f"{max(ratios):.2f} / {statistics.mean(ratios):.3f}")
            worst = max(worst, max(ratios))
            mean = max(mean, statistics.mean(ratios))
        lines.append(f"| {kept} | " + " | ".join(cells) + f" | {worst:.2f} / {mean:.3f} |")
        # the least bad worst cell; among equal ones (to the table's rounding), the least bad
        # worst mean
        key = (round(worst, 2), round(mean, 3))
        if best is None or key < best[1]:
            best = (kept, key)
    lines += ["", f"Least bad worst cell: {best[1][0]:.2f} (worst mean {best[1][1]:.3f}), from "
              f"{best[0]} kept weights per output channel (times the stride) on."]
    _io.atomic_write_bytes(out + ".md", ("\n".join(lines) + "\n").encode())
    print("\n".join(lines))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--densities", default="0.05,0.1,0.2,0.35,0.6")
    p.add_argument("--batches", default="64,32")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=OUT)
    p.add_argument("--choose", nargs="+", metavar="JSON",
                   help="score the rule's candidate thresholds on these runs' results instead "
                        "of timing (writes OUT.md)")
    args = p.parse_args()
    if args.choose:
        return choose(args.choose, args.out)
    import torch

    from sparsepai import _io

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
                    print(f"{r['layer']:12s} N{batch:<3d} d={d:.2f} "
                          f"kept/row {r['kept_per_row']:6.0f} wide {r['wide_ms']:7.2f} "
                          f"lanes {r['lanes_ms']:7.2f} auto {r['auto_ms']:7.2f} "
                          f"lanes/wide {r['lanes_over_wide']:.2f}", flush=True)
        load_after = os.getloadavg()
    results = {**run_header("bench_conv_layout.py", args.out, args.threads, load_before,
                            load_after), "rows": rows}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    _io.atomic_write_json(args.out + ".json", results)
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
                     f"{r['auto_ms']:.2f} | {r['lanes_over_wide']:.2f} | "
                     f"{r['auto_over_best']:.2f} |")
    _io.atomic_write_bytes(args.out + ".md", ("\n".join(lines) + "\n").encode())
    print(f"wrote {args.out}.json/.md")


if __name__ == "__main__":
    main()
