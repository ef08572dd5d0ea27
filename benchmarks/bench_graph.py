"""Channel graph build time: ``torch.export`` capture + the operator-level walk, for torchvision
ResNet-50 and ViT-B/16 (random weights, one 224x224 image), the issue's target being <= 2 s each.

For each model:
  - ``first``: the first ``analyse(model, x)`` in a fresh process (export's one-time setup
    included), median over ``--fresh`` processes;
  - ``again``: ``analyse(model, x)`` once more in the same process, which captures, walks and
    probes again (``capture``/``walk``/``probe``: its parts; the probe runs the model narrowed
    on the meta device, see ``sparsepai/structured/probe.py``), median of ``--repeat``;
  - ``cached``: ``analyse(model)`` without an input, the graph ``sp.prune`` left for ``sp.slim``
    and ``sp.apply_masks`` (a fingerprint and a dictionary lookup), median of ``--repeat``.

    python benchmarks/bench_graph.py   # alone on the machine: other jobs distort the timings

Results: benchmarks/results/graph.{json,md}, with the machine (lscpu) and its load average.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
from sparsepai import _io  # noqa: E402  (cheap: the package imports torch lazily)
from machine import cpu_name  # noqa: E402

OUT = os.path.join(HERE, "results")
MODELS = ("resnet50", "vit_b_16")


def _build(name):
    import torch
    import torchvision

    torch.manual_seed(0)
    return getattr(torchvision.models, name)().eval(), torch.randn(1, 3, 224, 224)


def _first(name):
    """Seconds of the first ``analyse`` in this (fresh) process."""
    from sparsepai.structured.analysis import analyse

    model, x = _build(name)
    t0 = time.perf_counter()
    analyse(model, x)
    return time.perf_counter() - t0


def _warm(name, repeat):
    from sparsepai.structured.analysis import analyse
    from sparsepai.structured.capture import capture
    from sparsepai.structured.opgraph import _Walker
    from sparsepai.structured.probe import output_shapes, unfollowed

    model, x = _build(name)
    graph = analyse(model, x)
    out = {"again": [], "capture": [], "walk": [], "probe": [], "cached": []}
    for _ in range(repeat):
        t0 = time.perf_counter()
        analyse(model, x)
        out["again"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        ep = capture(model, x)
        t1 = time.perf_counter()
        walked = _Walker(model, ep).run()
        t2 = time.perf_counter()
        unfollowed(model, x, walked, output_shapes(ep))
        out["capture"].append(t1 - t0)
        out["walk"].append(t2 - t1)
        out["probe"].append(time.perf_counter() - t2)
        t0 = time.perf_counter()
        analyse(model)
        out["cached"].append(time.perf_counter() - t0)
    out["groups"] = len(graph.prunable_groups())
    return out


def _machine():
    return f"{cpu_name()}, {os.cpu_count()} logical CPUs"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--fresh", type=int, default=5, help="fresh processes for the first call")
    ap.add_argument("--repeat", type=int, default=5, help="repeats in one process")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=OUT)
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    if args.child:
        kind, name = args.child
        res = _first(name) if kind == "first" else _warm(name, args.repeat)
        print("GRAPH-RESULT " + json.dumps(res), flush=True)
        return
    load_before = os.getloadavg()
    rows = {}
    for name in MODELS:
        firsts = []
        for _ in range(args.fresh):  # interleaved with nothing else: one process at a time
            firsts.append(_child("first", name, args))
        warm = _child("warm", name, args)
        rows[name] = {"first_s": statistics.median(firsts), "first_all_s": firsts,
                      **{f"{k}_s": statistics.median(v) for k, v in warm.items()
                         if k != "groups"},
                      "prunable_groups": warm["groups"]}
        print(name, {k: (round(v, 4) if isinstance(v, float) else v)
                     for k, v in rows[name].items()}, flush=True)
    rec = {"machine": _machine(), "threads": args.threads, "load_before": load_before,
           "load_after": os.getloadavg(), "fresh": args.fresh, "repeat": args.repeat,
           "models": rows}
    _io.atomic_write_bytes(os.path.join(args.out, "graph.json"),
                           json.dumps(rec, indent=1).encode())
    _io.atomic_write_bytes(os.path.join(args.out, "graph.md"), _table(rec).encode())


def _child(kind, name, args):
    p = subprocess.run([sys.executable, __file__, "--child", kind, name, "--repeat",
                        str(args.repeat), "--threads", str(args.threads)],
                       capture_output=True, text=True, check=True)
    line = [ln for ln in p.stdout.splitlines() if ln.startswith("GRAPH-RESULT ")][-1]
    return json.loads(line[13:])


def _table(rec):
    out = ["# Channel graph build time", "",
           f"Machine: {rec['machine']}; {rec['threads']} torch threads; load average "
           f"(1/5/15 min) {', '.join(f'{v:.2f}' for v in rec['load_before'])} before, "
           f"{', '.join(f'{v:.2f}' for v in rec['load_after'])} after. Medians: first call over "
           f"{rec['fresh']} fresh processes, the others over {rec['repeat']} repeats. Command: "
           "`python benchmarks/bench_graph.py`.", "",
           "| model | first call (s) | again (s) | of which capture | of which walk | of which "
           "probe | cached (s) | prunable groups |", "|---|---|---|---|---|---|---|---|"]
    for name, r in rec["models"].items():
        out.append(f"| {name} | {r['first_s']:.2f} | {r['again_s']:.2f} | {r['capture_s']:.2f} "
                   f"| {r['walk_s']:.3f} | {r.get('probe_s', 0):.2f} | {r['cached_s'] * 1e3:.1f} ms "
                   f"| {r['prunable_groups']} |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    main()
