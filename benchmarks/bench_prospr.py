"""Cost of scoring: ProsPr (full meta-gradient and first-order) against one SNIP score, on the
CIFAR ResNet-18 with batches of 128 32x32 images (random data: the cost does not depend on the
values). Every measurement runs in a fresh process; time is wall-clock of the whole ``sp.score``
call (private copy of the model included, for SNIP as for ProsPr), memory the process's peak
RSS. Runs are interleaved and repeated; the summary uses medians.

Two conditions: ``cold`` times the first ``sp.score`` of the process; ``warm`` first runs one
untimed forward/backward of the model (oneDNN primitives built, allocator grown). ``one_pass``
times one plain forward/backward of the model (train mode, no copy): the unit first-order ProsPr
needs M + 1 of, against SNIP's one.

    python benchmarks/bench_prospr.py         # -> benchmarks/results/prospr_cost.json

Targets: full ProsPr (M=3) at most 60 s and 8 GB on this 2-core CPU; first-order at
most 3x one SNIP score.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
RUNS = {
    "one_pass": None,
    "snip": {},
    "prospr_first_order": {"meta_steps": 3, "first_order": True},
    "prospr_full": {"meta_steps": 3},
}


def _cpu_seconds():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def worker(name, batch, model_name, warm, threads):
    import torch

    if threads:
        torch.set_num_threads(threads)

    sys.path.insert(0, os.path.dirname(HERE))
    import sparsepai as sp
    from sparsepai.experiments.models import get_model

    torch.manual_seed(0)
    model = get_model(model_name, num_classes=10)
    g = torch.Generator().manual_seed(0)
    data = [(torch.randn(batch, 3, 32, 32, generator=g), torch.randint(0, 10, (batch,), generator=g))
            for _ in range(5)]

    def one_pass(x, y):
        torch.nn.functional.cross_entropy(model(x), y).backward()
        model.zero_grad(set_to_none=True)

    if warm:
        one_pass(*data[4])
    t0, c0 = time.perf_counter(), _cpu_seconds()
    if name == "one_pass":
        one_pass(*data[0])
    else:
        sp.score(model, "snip" if name == "snip" else "prospr", data[:4], **RUNS[name])
    secs, cpu = time.perf_counter() - t0, _cpu_seconds() - c0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"run": name, "warm": warm, "seconds": secs, "cpu_seconds": cpu,
                      "threads": torch.get_num_threads(), "peak_rss_bytes": peak}))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--repeats", type=int, default=5, help="runs of each cheap measurement")
    ap.add_argument("--full-repeats", type=int, default=2, help="runs of full ProsPr (cold)")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch threads (0: torch's default). On a shared machine 1 thread "
                    "makes CPU time a steadier measure than wall time")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "prospr_cost.json"))
    ap.add_argument("--rows-from", default=None,
                    help="measure nothing: summarise the rows a run printed to this log")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--warm", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args.worker, args.batch, args.model, args.warm, args.threads)
    command = " ".join(["python", os.path.relpath(sys.argv[0])] + sys.argv[1:])
    if args.rows_from:
        # the rows a finished run printed (one per line), e.g. when its summary step failed
        import ast

        with open(args.rows_from) as f:
            rows = [ast.literal_eval(line.strip()) for line in f if line.startswith("{'run'")]
    else:
        rows = measure(args)
    write_results(rows, args, command)


def measure(args) -> list:
    plan = [(n, w) for _ in range(args.repeats) for w in (False, True)
            for n in ("one_pass", "snip", "prospr_first_order")]
    plan += [("prospr_full", False)] * args.full_repeats
    rows = []
    for name, warm in plan:
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", name, "--batch",
               str(args.batch), "--model", args.model, "--threads", str(args.threads)]
        cmd += ["--warm"] if warm else []
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode != 0:
            rows.append({"run": name, "warm": warm, "error": p.stderr.strip().splitlines()[-1:]})
        else:
            rows.append(json.loads(p.stdout.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    return rows


def write_results(rows, args, command):
    def medians(key):
        out = {}
        for r in rows:
            if "error" not in r:
                out.setdefault((r["run"], r["warm"]), []).append(r[key])
        return {k: statistics.median(v) for k, v in out.items()}

    med, cpu = medians("seconds"), medians("cpu_seconds")
    summary = [{"run": k[0], "warm": k[1], "median_seconds": v, "median_cpu_seconds": cpu[k]}
               for k, v in sorted(med.items())]
    notes = []
    full = [r for r in rows if r["run"] == "prospr_full" and "error" not in r]
    if full:
        notes.append(f"full ProsPr: median {med[('prospr_full', False)]:.1f} s wall, "
                     f"{cpu[('prospr_full', False)]:.1f} s CPU (target <= 60 s), peak RSS "
                     f"{max(r['peak_rss_bytes'] for r in full) / 2**30:.2f} GiB (target <= 8 GB)")
    for warm, (what, m) in itertools.product((False, True), (("wall", med), ("CPU", cpu))):
        k = lambda n: (n, warm)  # noqa: E731
        if k("snip") in m and k("prospr_first_order") in m and k("one_pass") in m:
            notes.append(f"first-order ProsPr ({'warm' if warm else 'cold'}, {what} time): "
                         f"{m[k('prospr_first_order')]:.2f} s = "
                         f"{m[k('prospr_first_order')] / m[k('snip')]:.2f}x one SNIP score "
                         f"({m[k('snip')]:.2f} s) (target <= 3x); one forward/backward "
                         f"{m[k('one_pass')]:.2f} s, so the M + 1 = 4 passes alone are "
                         f"{4 * m[k('one_pass')] / m[k('snip')]:.2f}x SNIP")
    print("\n".join(notes))
    meta = {"command": command, "model": args.model, "batch": args.batch,
            "repeats": args.repeats, "threads": args.threads or "torch default",
            "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    sys.path.insert(0, os.path.dirname(HERE))
    from sparsepai import _io

    _io.atomic_write_bytes(args.out, json.dumps(
        {"meta": meta, "summary": summary, "targets": notes, "rows": rows}, indent=1).encode())


if __name__ == "__main__":
    main()
