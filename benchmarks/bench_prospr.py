"""Cost of scoring: ProsPr (full meta-gradient and first-order) against one SNIP score, on the
CIFAR ResNet-18 with batches of 128 32x32 images (random data: the cost does not depend on the
values). Each method runs in a fresh process; time is wall-clock of sp.score, memory the
process's peak RSS.

    python benchmarks/bench_prospr.py         # -> benchmarks/results/prospr_cost.json

Targets (issue 4): full ProsPr (M=3) at most 60 s and 8 GB on this 2-core CPU; first-order at
most 3x one SNIP score.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
RUNS = {
    "snip": {},
    "prospr_first_order": {"meta_steps": 3, "first_order": True},
    "prospr_full": {"meta_steps": 3},
}


def worker(name, batch, model_name):
    import torch

    sys.path.insert(0, os.path.dirname(HERE))
    import sparsepai as sp
    from sparsepai.models import get_model

    torch.manual_seed(0)
    model = get_model(model_name, num_classes=10)
    g = torch.Generator().manual_seed(0)
    data = [(torch.randn(batch, 3, 32, 32, generator=g), torch.randint(0, 10, (batch,), generator=g))
            for _ in range(4)]
    method = "snip" if name == "snip" else "prospr"
    t0 = time.perf_counter()
    sp.score(model, method, data, **RUNS[name])
    secs = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"run": name, "seconds": secs, "peak_rss_bytes": peak}))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "prospr_cost.json"))
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args.worker, args.batch, args.model)
    rows = []
    for name in RUNS:
        p = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", name,
                            "--batch", str(args.batch), "--model", args.model],
                           capture_output=True, text=True)
        if p.returncode != 0:
            rows.append({"run": name, "error": p.stderr.strip().splitlines()[-1:]})
        else:
            rows.append(json.loads(p.stdout.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    by = {r["run"]: r for r in rows if "error" not in r}
    notes = []
    if "prospr_full" in by:
        f = by["prospr_full"]
        notes.append(f"full ProsPr: {f['seconds']:.1f} s (target <= 60 s), peak RSS "
                     f"{f['peak_rss_bytes'] / 2**30:.2f} GiB (target <= 8 GB)")
    if "prospr_first_order" in by and "snip" in by:
        r = by["prospr_first_order"]["seconds"] / by["snip"]["seconds"]
        notes.append(f"first-order ProsPr: {r:.2f}x one SNIP score (target <= 3x)")
    print("\n".join(notes))
    meta = {"command": " ".join(["python", os.path.relpath(sys.argv[0])] + sys.argv[1:]),
            "model": args.model, "batch": args.batch, "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"meta": meta, "rows": rows, "targets": notes}, f, indent=1)


if __name__ == "__main__":
    main()
