"""Global top-k over many score tensors: sparsepai against the usual concatenate-then-select.

Each (size, method) runs in a fresh subprocess so that its peak memory can be read from the
process's peak RSS: "extra" memory is the peak minus the RSS right after the scores were made,
minus the output masks (N bytes) for the methods that return masks, read after one untimed
warm-up run. Times are medians of --repeats runs after it. All methods of one size are measured
in the same invocation, on identical scores (same seed), so the ratios are same-run ratios.

The topk_mask rows carry a memory floor measured in the same process, interleaved with the
kernel runs (medians): two read passes over the scores (the faster of torch's sum and amax over
every tensor) plus one pass that allocates and writes the bool masks (empty + fill_), i.e. what
"two read passes and writing the masks" costs on this machine. ratio_vs_floor = median / floor.

Run it with the checkout first on the path (PYTHONPATH=. from the repository root), or Python
imports whichever sparsepai is installed; each row records the path it measured.

    python benchmarks/bench_topk.py                      # 1e6 .. 4e8 scores over 60 tensors
    python benchmarks/bench_topk.py --sizes 1e6 1e7      # a quick look
    python benchmarks/bench_topk.py --huge               # + 2.5e9 float16 scores

Methods whose peak memory would not fit in the machine are reported as skipped.

Writes benchmarks/results/topk.{json,csv,png}.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")
METHODS = ["sparsepai.topk_mask", "sparsepai.kth_largest", "torch.kthvalue(cat)",
           "torch.topk(cat)", "prune.global_unstructured"]
MASK_METHODS = {"sparsepai.topk_mask", "torch.topk(cat)", "prune.global_unstructured"}


def _writers():
    """sparsepai's atomic writers, from this checkout: only the parent process writes; the
    workers, which never call this, measure whichever sparsepai is first on their path."""
    if os.path.dirname(HERE) not in sys.path:
        sys.path.insert(0, os.path.dirname(HERE))
    from sparsepai import _io

    return _io


def _rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def make_scores(n, tensors, dtype_name, seed=0):
    import torch

    dtype = getattr(torch, dtype_name)
    g = torch.Generator().manual_seed(seed)
    # layer-like sizes: a geometric spread, the largest ~30x the smallest
    w = torch.logspace(0, 1.5, tensors, dtype=torch.float64)
    sizes = (w / w.sum() * n).floor().to(torch.int64)
    sizes[-1] += n - int(sizes.sum())
    out = []
    for i, s in enumerate(sizes.tolist()):
        t = torch.empty(s, dtype=dtype)
        # |N(0, 1)| * a per-layer scale: saliency-like, non-negative, with a few exact ties
        t.normal_(generator=g).abs_().mul_(float(1.0 + (i % 7)))
        out.append(t)
    return out


# peak memory of each method as a multiple of the scores' bytes (measured at 1e8, rounded up);
# a run that would not fit in the machine's available memory is skipped, not attempted
MEMORY_FACTOR = {"sparsepai.topk_mask": 1.3, "sparsepai.kth_largest": 1.1,
                 "torch.kthvalue(cat)": 5.5, "torch.topk(cat)": 7.0,
                 "prune.global_unstructured": 18.0}


def _mem_available():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def run_worker(args):
    import torch

    import sparsepai as sp  # loaded before the baseline RSS reading: the library is not overhead

    sp.has_extension()
    scores = make_scores(args.size, args.tensors, args.dtype)
    n = sum(s.numel() for s in scores)
    k = int(round(args.keep * n))
    base = _rss_bytes()
    method = args.method

    if method == "sparsepai.topk_mask":
        def fn():
            return sp.topk_mask(scores, k)

        def check(r):
            return r.threshold.item(), sum(int(m.sum()) for m in r.masks)
    elif method == "sparsepai.kth_largest":
        def fn():
            return sp.kth_largest(scores, k)

        def check(r):
            return r.item(), None
    elif method == "torch.kthvalue(cat)":
        def fn():
            flat = torch.cat([s.reshape(-1) for s in scores])
            return torch.kthvalue(flat, n - k + 1).values

        def check(r):
            return r.item(), None
    elif method == "torch.topk(cat)":
        def fn():
            flat = torch.cat([s.reshape(-1) for s in scores])
            top = torch.topk(flat, k, sorted=False)
            mask = torch.zeros(n, dtype=torch.bool)
            mask[top.indices] = True
            return top.values.min(), mask

        def check(r):
            return r[0].item(), int(r[1].sum())
    elif method == "prune.global_unstructured":
        import torch.nn.utils.prune as prune

        class Holder(torch.nn.Module):
            def __init__(self, t):
                super().__init__()
                self.weight = torch.nn.Parameter(t, requires_grad=False)

        mods = [Holder(s) for s in scores]

        def fn():
            prune.global_unstructured([(m, "weight") for m in mods],
                                      pruning_method=prune.L1Unstructured, amount=n - k)
            masks = [m.weight_mask for m in mods]
            for m in mods:
                prune.remove(m, "weight")
            return masks

        def check(r):
            return None, sum(int(m.sum()) for m in r)
    else:
        raise SystemExit(f"unknown method {method}")

    floor = {"sum": [], "amax": [], "write": []} if method == "sparsepai.topk_mask" else None

    def floor_passes():
        t0 = time.perf_counter()
        for s in scores:
            s.sum()
        t1 = time.perf_counter()
        for s in scores:
            s.amax()
        t2 = time.perf_counter()
        masks = [torch.empty(s.shape, dtype=torch.bool).fill_(True) for s in scores]
        t3 = time.perf_counter()
        del masks
        floor["sum"].append(t1 - t0)
        floor["amax"].append(t2 - t1)
        floor["write"].append(t3 - t2)

    # one untimed run first: the peak memory is read after it, before the floor passes allocate
    out = fn()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    times = []
    for _ in range(args.repeats):
        out = None  # free the previous result before the next run
        if floor is not None:
            floor_passes()  # interleaved with the kernel runs: same machine state
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    extra_cols = {}
    if floor is not None:
        med = {key: statistics.median(v) for key, v in floor.items()}
        read = min(med["sum"], med["amax"])
        floor_s = 2 * read + med["write"]
        extra_cols = {"read_pass_s": read, "write_pass_s": med["write"], "floor_s": floor_s,
                      "ratio_vs_floor": statistics.median(times) / floor_s,
                      "floor_times_s": floor}
    value, kept = check(out)  # after the peak reading: the check allocates
    score_bytes = sum(s.numel() * s.element_size() for s in scores)
    extra = max(0, peak - base)
    if method in MASK_METHODS:
        extra = max(0, extra - n)  # the bool masks are output, not overhead
    print(json.dumps({
        "method": method, "n": n, "k": k, "dtype": args.dtype, "tensors": args.tensors,
        "threads": torch.get_num_threads(), "times_s": times, "median_s": statistics.median(times),
        "threshold": value, "kept": kept, "score_bytes": score_bytes, "extra_peak_bytes": extra,
        "extra_over_scores": extra / score_bytes, **extra_cols,
        "sparsepai_path": os.path.dirname(sp.__file__),  # which build was measured
    }))


def run_one(size, method, args):
    dtype = args.dtype_for(size)
    need = MEMORY_FACTOR[method] * size * (2 if dtype in ("float16", "bfloat16") else 4) + size
    if need > 0.85 * _mem_available():
        return {"method": method, "n": size, "dtype": dtype,
                "error": f"skipped: needs ~{need / 2**30:.0f} GiB, "
                         f"{_mem_available() / 2**30:.0f} GiB available"}
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--size", str(size),
           "--method", method, "--repeats", str(args.repeats), "--tensors", str(args.tensors),
           "--dtype", args.dtype_for(size), "--keep", str(args.keep)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    if p.returncode != 0:
        tail = (p.stderr or p.stdout).strip().splitlines()[-1:] or ["?"]
        return {"method": method, "n": size, "error": tail[0][:300]}
    return json.loads(p.stdout.strip().splitlines()[-1])


def plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if "error" not in r]
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.5))
    for m in METHODS:
        pts = sorted((r["n"], r["median_s"], r["extra_over_scores"]) for r in ok if r["method"] == m)
        if not pts:
            continue
        a.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=m)
        fl = sorted((r["n"], r["floor_s"]) for r in ok if r["method"] == m and "floor_s" in r)
        if fl:
            a.plot([p[0] for p in fl], [p[1] for p in fl], ls="--", color="grey",
                   label="memory floor (2 reads + mask write)")
        b.plot([p[0] for p in pts], [100 * p[2] for p in pts], marker="o", label=m)
    a.set(xscale="log", yscale="log", xlabel="scores (N)", ylabel="median time (s)",
          title="Global top-k time (lower is better)")
    b.set(xscale="log", yscale="log", xlabel="scores (N)",
          ylabel="extra peak memory (% of scores)", title="Extra memory beyond scores and masks")
    b.axhline(5, color="grey", ls=":", lw=1)
    b.text(1.1 * min(r["n"] for r in ok), 5.5, "5% target", color="grey", fontsize=8)
    a.grid(True, which="both", alpha=0.3)
    b.grid(True, alpha=0.3)
    a.legend(fontsize=8)
    fig.suptitle(f"{os.cpu_count()} CPU cores; float32 scores over 60 tensors "
                 "(the 2.5e9 point is float16)")
    fig.tight_layout()
    _writers().save_figure(path, fig, dpi=120)


def write_results(prefix, meta, rows):
    """PREFIX.json and PREFIX.csv, each written atomically."""
    _io = _writers()
    _io.atomic_write_bytes(prefix + ".json",
                           json.dumps({"meta": meta, "rows": rows}, indent=1).encode())
    keys = ["method", "n", "k", "dtype", "tensors", "threads", "median_s", "extra_peak_bytes",
            "extra_over_scores", "kept", "threshold", "speedup_vs_kthvalue_cat", "read_pass_s",
            "write_pass_s", "floor_s", "ratio_vs_floor", "error"]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    _io.atomic_write_bytes(prefix + ".csv", buf.getvalue().encode())


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="+", type=float, default=[1e6, 1e7, 1e8, 4e8])
    ap.add_argument("--huge", action="store_true", help="also 2.5e9 float16 scores (sparsepai only)")
    ap.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tensors", type=int, default=60)
    ap.add_argument("--keep", type=float, default=0.1, help="fraction kept (k = keep * N)")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--out", default=os.path.join(RESULTS, "topk"))
    ap.add_argument("--replot", action="store_true",
                    help="only redraw the plot from an existing OUT.json")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--size", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--method", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return run_worker(args)
    if args.replot:
        with open(args.out + ".json") as f:
            return plot(json.load(f)["rows"], args.out + ".png")

    huge = int(2.5e9)
    args.dtype_for = lambda n: "float16" if (args.huge and n == huge) else args.dtype
    plan = [(int(s), m) for s in args.sizes for m in args.methods]
    if args.huge:
        plan += [(huge, m) for m in args.methods]
    rows = []
    for size, method in plan:
        r = run_one(size, method, args)
        rows.append(r)
        if "error" in r:
            print(f"{size:>12,} {method:<28} FAILED: {r['error']}", flush=True)
        else:
            floor = (f"  floor {r['floor_s']:.3f} s ({r['ratio_vs_floor']:.2f}x)"
                     if "floor_s" in r else "")
            print(f"{size:>12,} {method:<28} {r['median_s']:9.3f} s  extra {100 * r['extra_over_scores']:6.1f}%"
                  f"  kept={r['kept']}{floor}", flush=True)
    # same-run ratios against the slowest common baseline
    for size in sorted({r["n"] for r in rows if "error" not in r}):
        by = {r["method"]: r for r in rows if r.get("n") == size and "error" not in r}
        if "sparsepai.topk_mask" in by and "torch.kthvalue(cat)" in by:
            ratio = by["torch.kthvalue(cat)"]["median_s"] / by["sparsepai.topk_mask"]["median_s"]
            print(f"{size:>12,} topk_mask is {ratio:.1f}x faster than torch.kthvalue(cat)")
            for r in rows:
                if r.get("n") == size and r.get("method") == "sparsepai.topk_mask":
                    r["speedup_vs_kthvalue_cat"] = ratio
    meta = {"command": " ".join([os.path.relpath(sys.argv[0])] + sys.argv[1:]),
            "machine": platform.platform(), "cpus": os.cpu_count(),
            "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    write_results(args.out, meta, rows)
    plot(rows, args.out + ".png")
    print(f"wrote {args.out}.json/.csv/.png")


if __name__ == "__main__":
    main()
