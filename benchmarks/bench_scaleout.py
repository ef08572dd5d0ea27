"""Scale-out of pruning across ranks: the bytes each rank exchanges, by formula and measured,
and wall time on 1 vs 2 ranks.

Formula (payload: the bytes a rank hands to collectives; "ring": what a ring algorithm then
sends per rank, all-reduce of S bytes -> 2 (R-1)/R * S, all-gather of s bytes per rank ->
(R-1) * s). N = prunable weights, b = bytes per gradient element, L = prunable layers, R = ranks.

- argument check (every sp.score/sp.prune(group=)): one all-gather of (1 + F) int64, F = 6
  fields for a replicated prune (method, sparsity, structured, options, model, weights), 5 for
  a sharded one (no weights digest); the replicated result check: one all-gather of 1 int64.
- threshold, sharded (``sp.topk_mask(group=)``): an all-gather of 6 int64, P all-reduces of a
  65536-bin int64 histogram (P = 1 for 16-bit, 2 for float32, 4 for float64 scores), an
  all-gather of 1 int64, then an all-reduce of L int64 kept counts. Independent of N.
  A replicated model thresholds locally (identical scores): no exchange.
- gradients, replicated: one all-reduce per averaged gradient; SNIP / FORCE (per iteration) /
  AutoSparse: B * N * b for B batches; GraSP 4 B * N * b; first-order ProsPr (M + 1) passes
  over all parameters' gradients (N_all) for the M inner steps and the meta-loss' N weights.
  Sharded models' gradients are FSDP's own collectives, those of a training step: per
  forward/backward the local (padded) shards S_loc = b * sum over parameters of
  ceil(rows / R) * (numel / rows) are all-gathered twice (forward, and again in backward after
  resharding) and the full padded gradients (R * S_loc) reduce-scattered: (2 + R) * S_loc.

    python benchmarks/bench_scaleout.py            # measure at 2 and 3 ranks, time 1 vs 2
    python benchmarks/bench_scaleout.py --no-time  # bytes only

Writes benchmarks/results/scaleout.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import sys
import time
from datetime import timedelta

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")
HIST = 65536 * 8
PASSES = {"float16": 1, "bfloat16": 1, "float32": 2, "float64": 4}


def threshold_payload(layers: int, dtype: str = "float32") -> int:
    """Bytes a rank hands to collectives for one sharded prune's threshold (checks included)."""
    return (1 + 5) * 8 + 6 * 8 + PASSES[dtype] * HIST + 8 + layers * 8


def threshold_ring(layers: int, ranks: int, dtype: str = "float32") -> float:
    gathers = ((1 + 5) + 6 + 1) * 8 * (ranks - 1)
    reduces = (PASSES[dtype] * HIST + layers * 8) * 2 * (ranks - 1) / ranks
    return gathers + reduces


def fsdp_step_payload(shapes, ranks: int, elem: int = 4) -> int:
    """FSDP2's bytes per forward/backward for parameters of ``shapes`` (dim 0 sharded)."""
    local = 0
    for shape in shapes:
        rows = shape[0]
        per_row = 1
        for d in shape[1:]:
            per_row *= d
        local += -(-rows // ranks) * per_row
    return (2 + ranks) * local * elem


def snip_payload(n: int, batches: int = 1, elem: int = 4) -> int:
    """Replicated SNIP: the argument check, the gradients, the result check."""
    return (1 + 6) * 8 + batches * n * elem + 8


def snip_ring(n: int, ranks: int, batches: int = 1, elem: int = 4) -> float:
    return ((1 + 6) + 1) * 8 * (ranks - 1) + batches * n * elem * 2 * (ranks - 1) / ranks


# ---------------------------------------------------------------------------------------------
# measurement: every collective wrapped to count the bytes handed to it

# the tensor a rank contributes, by collective (positional index, keyword name)
_COUNTED = {"all_reduce": (0, "tensor"), "broadcast": (0, "tensor"),
            "all_gather": (1, "tensor"), "all_gather_into_tensor": (1, "input_tensor"),
            "all_gather_single": (1, "input_tensor"),  # FSDP2's all-gathers
            "reduce_scatter_tensor": (1, "input"),
            "reduce_scatter_single": (1, "input")}  # FSDP2's reduce-scatters


def _count_collectives(log):
    import torch.distributed as dist

    def wrap(name, fn, pos, key):
        def counted(*args, **kwargs):
            t = args[pos] if len(args) > pos else kwargs[key]
            log.append((name, t.numel() * t.element_size()))
            return fn(*args, **kwargs)
        return counted

    for name, (pos, key) in _COUNTED.items():
        if hasattr(dist, name):
            setattr(dist, name, wrap(name, getattr(dist, name), pos, key))


def _mlp(widths, dtype):
    import torch

    torch.manual_seed(0)
    layers = []
    for a, b in zip(widths, widths[1:]):
        layers += [torch.nn.Linear(a, b), torch.nn.Tanh()]
    return torch.nn.Sequential(*layers[:-1]).to(dtype)


def _data(widths, rank, n=2):
    import torch

    g = torch.Generator().manual_seed(100 + rank)
    return [(torch.randn(8, widths[0], generator=g), torch.randint(0, widths[-1], (8,),
                                                                     generator=g))
            for _ in range(n)]


def _shard(model, world):
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh("cpu", (world,))
    for layer in model:
        if hasattr(layer, "weight"):
            fully_shard(layer, mesh=mesh)
    return fully_shard(model, mesh=mesh)


def _worker(rank, world, port, widths, what, out):
    import torch
    import torch.distributed as dist

    import sparsepai as sp

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=timedelta(seconds=300))
    torch.set_num_threads(1)
    log = []
    _count_collectives(log)
    group = dist.group.WORLD
    res = {}
    data = _data(widths, rank)
    if "bytes" in what:
        model = _mlp(widths, torch.float32)
        log.clear()
        sp.prune(model, "snip", 0.9, data, group=group)
        res["replicated snip"] = sum(b for _, b in log)
        sharded = _shard(_mlp(widths, torch.float32), world)
        log.clear()
        sp.prune(sharded, "magnitude", 0.9, group=group)
        res["sharded magnitude"] = sum(b for _, b in log)
        log.clear()
        sp.prune(sharded, "snip", 0.9, data, group=group)
        res["sharded snip"] = sum(b for _, b in log)
    if "time" in what:
        for label, fn in (
                ("replicated snip", lambda m: sp.prune(m, "snip", 0.9, data, group=group)),
                ("sharded magnitude", lambda m: sp.prune(m, "magnitude", 0.9, group=group))):
            model = _mlp(widths, torch.float32)
            if label.startswith("sharded"):
                model = _shard(model, world)
            fn(model)  # warm-up
            dist.barrier()
            times = []
            for _ in range(3):
                t = time.perf_counter()
                fn(model)
                dist.barrier()
                times.append(time.perf_counter() - t)
            res[f"time {label}"] = sorted(times)[1]
    if rank == 0:
        out.update(res)
    dist.destroy_process_group()


def _run(world, widths, what):
    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = mp.Manager().dict()
    mp.spawn(_worker, args=(world, port, widths, what, out), nprocs=world, join=True)
    return dict(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--widths", type=int, nargs="+", default=[64, 256, 256, 10],
                    help="MLP widths of the measured model (float32)")
    ap.add_argument("--time-widths", type=int, nargs="+", default=[512, 2048, 2048, 10],
                    help="MLP widths of the timed model")
    ap.add_argument("--no-time", action="store_true", help="skip the 1 vs 2 rank timing")
    args = ap.parse_args(argv)
    w = args.widths
    n = sum(a * b for a, b in zip(w, w[1:]))
    layers = len(w) - 1
    rows = []
    for world in (2, 3):
        got = _run(world, w, ("bytes",))
        for label, formula in (("replicated snip", snip_payload(n)),
                               ("sharded magnitude", threshold_payload(layers))):
            rows.append({"ranks": world, "case": label, "N": n, "measured_payload": got[label],
                         "formula_payload": formula})
        shapes = [s for a, b in zip(w, w[1:]) for s in ((b, a), (b,))]
        rows.append({"ranks": world, "case": "sharded snip (threshold + one FSDP step)", "N": n,
                     "measured_payload": got["sharded snip"],
                     "formula_payload": threshold_payload(layers)
                     + fsdp_step_payload(shapes, world)})
    big = 7_000_000_000
    projection = [{"ranks": r, "N": big, "layers": 224,
                   "sharded threshold payload": threshold_payload(224),
                   "sharded threshold ring": threshold_ring(224, r),
                   "sharded snip: FSDP step payload (fp32, 1 batch)": (2 + r) * big * 4 // r,
                   "replicated snip payload (fp32 grads, 1 batch)": snip_payload(big),
                   "replicated snip ring": snip_ring(big, r),
                   "gathering all scores to one rank (what we avoid), rank 0 receives":
                       big * 4 * (r - 1) / r}
                  for r in (8, 64, 512)]
    timing = None
    if not args.no_time:
        tw = args.time_widths
        timing = {"N": sum(a * b for a, b in zip(tw, tw[1:])), "widths": tw}
        for world in (1, 2):
            got = _run(world, tw, ("time",))
            timing[f"{world} rank(s)"] = {k[5:]: v for k, v in got.items()}
    load = os.getloadavg()[0]  # other jobs share this machine: timings are only indicative
    report = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                          "python": sys.version.split()[0], "load_average_1min": load},
              "measured": rows, "projection_7B": projection, "timing_s": timing}
    # imported here, after the last spawn: the ranks import whichever sparsepai is on the path
    sys.path.insert(0, os.path.dirname(HERE))
    from sparsepai import _io

    _io.atomic_write_bytes(os.path.join(RESULTS, "scaleout.json"),
                           json.dumps(report, indent=1).encode())
    lines = ["| ranks | case | N | measured bytes | formula bytes |", "|---|---|---|---|---|"]
    lines += [f"| {r['ranks']} | {r['case']} | {r['N']} | {r['measured_payload']} | "
              f"{r['formula_payload']} |" for r in rows]
    lines += ["", "7B parameters (224 layers), bytes per rank:", "",
              "| ranks | threshold payload | threshold ring | replicated SNIP payload | "
              "replicated SNIP ring | sharded SNIP: FSDP step payload | naive gather at rank 0 |",
              "|---|---|---|---|---|---|---|"]
    lines += [f"| {p['ranks']} | {p['sharded threshold payload']:,} | "
              f"{p['sharded threshold ring']:,.0f} | "
              f"{p['replicated snip payload (fp32 grads, 1 batch)']:,} | "
              f"{p['replicated snip ring']:,.0f} | "
              f"{p['sharded snip: FSDP step payload (fp32, 1 batch)']:,} | "
              f"{p['gathering all scores to one rank (what we avoid), rank 0 receives']:,.0f} |"
              for p in projection]
    if timing:
        lines += ["", f"Wall time (median of 3, s), MLP of {timing['N']:,} weights, "
                  f"{os.cpu_count()} CPUs, 1-minute load average {load:.1f} (shared machine):",
                  ""]
        for k in ("1 rank(s)", "2 rank(s)"):
            lines.append(f"- {k}: " + ", ".join(f"{a} {b:.3f}" for a, b in timing[k].items()))
    text = "\n".join(lines)
    print(text)
    _io.atomic_write_bytes(os.path.join(RESULTS, "scaleout.md"), (text + "\n").encode())
    bad = [r for r in rows if r["measured_payload"] != r["formula_payload"]]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
