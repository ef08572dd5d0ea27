"""The three kernel benchmarks at GPU sizes, each against its baseline in the same run.

1. ``topk``: ``sp.topk_mask`` / ``sp.kth_largest`` over 1e9 float32 scores in 60 tensors
   (k = 10%), with every backend the table offers on CUDA tensors (C++ CUDA, Triton), against
   ``torch.topk`` and ``torch.kthvalue`` on the concatenated scores and against a memory floor:
   two read passes over the scores (a per-tensor ``amax``, measured) plus one write of the bool
   masks (a ``fill_``, measured).
2. ``optim``: ``MaskedSGD`` / ``MaskedAdamW`` steps (C++ CUDA and Triton backends) at densities
   1, 0.5 and 0.05 against torch's fused ``SGD`` / ``AdamW`` on the dense parameters, for the
   CIFAR ResNet-18's parameters (11M) and 20 tensors of 4096 x 4096 (335M).
3. ``slim``: one training step (forward, backward, SGD with momentum) of the CIFAR ResNet-18 at
   batch 256, dense against ``sp.slim`` of its structured magnitude masks at 80/90/95%.

Times: CUDA-synchronised wall clock, median over repetitions, contenders interleaved in rounds.
Run by scripts/gpu_check.sh; ``--smoke`` runs every section at toy sizes on the CPU (checks the
script, measures nothing).

    python benchmarks/bench_gpu.py --out gpu_bench.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import sparsepai as sp  # noqa: E402
from sparsepai import _io  # noqa: E402
from sparsepai.ops import dispatch  # noqa: E402


def _sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def time_rounds(fns, dev, reps, budget_s=60.0):
    """Median seconds per call of each of ``fns`` (name -> callable), in interleaved rounds; a
    warm-up call each first, and fewer rounds when one round would exceed ``budget_s / reps``."""
    first = {}
    for name, fn in fns.items():
        _sync(dev)
        t0 = time.perf_counter()
        fn()
        _sync(dev)
        first[name] = time.perf_counter() - t0
    reps = max(1, min(reps, int(budget_s / max(sum(first.values()), 1e-9))))
    times = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            _sync(dev)
            t0 = time.perf_counter()
            fn()
            _sync(dev)
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(v) for name, v in times.items()}, reps


_SMOKE = []  # non-empty under --smoke: the reference joins the contenders, to run its code


def _backends(op, dev):
    """The kernel backends that can run ``op`` here (and the reference under --smoke)."""
    out = [b for b in ("cpu", "cuda", "triton") if dispatch.available(b, op, dev.type)]
    return out + ["reference"] * bool(_SMOKE)


def bench_topk(dev, n, tensors, keep, reps):
    g = torch.Generator(device=dev).manual_seed(0)
    w = torch.logspace(0, 1.5, tensors, dtype=torch.float64)
    sizes = (w / w.sum() * n).floor().to(torch.int64)
    sizes[-1] += n - int(sizes.sum())
    scores = []
    for i, s in enumerate(sizes.tolist()):  # |N(0, 1)| * a per-layer scale: saliency-like
        t = torch.empty(s, dtype=torch.float32, device=dev)
        scores.append(t.normal_(generator=g).abs_().mul_(float(1 + i % 7)))
    k = int(keep * n)
    masks = [torch.empty(s.shape, dtype=torch.bool, device=dev) for s in scores]
    fns = {
        "read pass (amax)": lambda: [torch.amax(s) for s in scores],
        "mask write (fill)": lambda: [m.fill_(True) for m in masks],
    }
    results = {}
    for b in _backends("topk_mask", dev):
        def run(b=b, op=sp.topk_mask):
            with dispatch.use_backend(b):
                results[b] = op(scores, k)

        def kth(b=b):
            with dispatch.use_backend(b):
                sp.kth_largest(scores, k)

        fns[f"sparsepai.topk_mask[{b}]"] = run
        fns[f"sparsepai.kth_largest[{b}]"] = kth

    def torch_topk():
        cat = torch.cat([s.reshape(-1) for s in scores])
        idx = torch.topk(cat, k, sorted=False).indices
        keep_ = torch.zeros(n, dtype=torch.bool, device=dev)
        keep_[idx] = True
        return list(keep_.split(sizes.tolist()))

    def torch_kth():
        return torch.kthvalue(torch.cat([s.reshape(-1) for s in scores]), n - k + 1).values

    fns["torch.topk(cat) + masks"] = torch_topk
    fns["torch.kthvalue(cat)"] = torch_kth
    med, reps = time_rounds(fns, dev, reps)
    want = torch_kth()
    checks = {b: bool(torch.equal(r.threshold, want)) and
              sum(int(m.sum()) for m in r.masks) == k for b, r in results.items()}
    floor = 2 * med["read pass (amax)"] + med["mask write (fill)"]
    rows = [{"method": m, "seconds": t, "vs_floor": t / floor} for m, t in med.items()]
    return {"n": n, "tensors": tensors, "k": k, "reps": reps, "floor_seconds": floor,
            "read_GBps": n * 4 / med["read pass (amax)"] / 1e9, "correct": checks, "rows": rows}


def _shapes(model):
    if model == "resnet18":
        from sparsepai.experiments.models import get_model

        return [p.shape for p in get_model("resnet18", 10).parameters()]
    count, side = (int(x) for x in model.split("x"))  # "20x4096": 20 tensors of side x side
    return [(side, side)] * count


def bench_optim(dev, models, densities, reps):
    rows = []
    for model in models:
        shapes = _shapes(model)
        numel = sum(torch.Size(s).numel() for s in shapes)
        for opt_name in ("sgd", "adamw"):
            for density in densities:
                g = torch.Generator(device=dev).manual_seed(0)
                fns = {}
                keep = {}

                def make(masked):
                    ps = [torch.nn.Parameter(torch.randn(s, generator=g, device=dev))
                          for s in shapes]
                    for p in ps:
                        p.grad = torch.randn(p.shape, generator=g, device=dev)
                    if not masked:
                        return ps, None
                    ms = [torch.rand(s, generator=g, device=dev) < density if len(s) > 1
                          else None for s in shapes]
                    return ps, ms

                for b in _backends("masked_sgd_", dev):
                    ps, ms = make(True)
                    with dispatch.use_backend(b):
                        opt = (sp.optim.MaskedSGD(ps, ms, lr=0.01, momentum=0.9,
                                                  weight_decay=5e-4) if opt_name == "sgd" else
                               sp.optim.MaskedAdamW(ps, ms, lr=1e-3, weight_decay=5e-4))
                    keep[b] = (ps, ms)

                    def step(opt=opt, b=b):
                        with dispatch.use_backend(b):
                            opt.step()

                    # the automatic choice needs no switching (a few us per step otherwise)
                    auto = dispatch.forced() is None and b == dispatch.backend("masked_sgd_",
                                                                                dev.type)
                    fns[f"masked[{b}]"] = opt.step if auto else step
                ps, _ = make(False)
                dense = (torch.optim.SGD(ps, lr=0.01, momentum=0.9, weight_decay=5e-4, fused=True)
                         if opt_name == "sgd" else
                         torch.optim.AdamW(ps, lr=1e-3, weight_decay=5e-4, fused=True))
                fns["torch fused (dense)"] = dense.step
                med, n_reps = time_rounds(fns, dev, reps, budget_s=20.0)
                ok = {b: all(bool((p[~m] == 0).all()) for p, m in zip(*keep[b]) if m is not None)
                      for b in keep}
                base = med["torch fused (dense)"]
                for name, t in med.items():
                    rows.append({"model": model, "params": numel, "optimizer": opt_name,
                                 "density": density, "method": name, "seconds": t,
                                 "vs_torch_fused": t / base, "reps": n_reps,
                                 "pruned_stay_zero": ok.get(name[7:-1])})
    return rows


def bench_slim(dev, batch, image, sparsities, reps):
    from sparsepai.experiments.models import get_model

    g = torch.Generator(device=dev).manual_seed(0)
    x = torch.randn(batch, 3, image, image, generator=g, device=dev)
    y = torch.randint(0, 10, (batch,), generator=g, device=dev)
    torch.manual_seed(0)
    dense = get_model("resnet18", 10).to(dev)
    models = {"dense": dense}
    for s in sparsities:
        masks = sp.prune(dense, "magnitude", s, [(x[:8], y[:8])], structured=True)
        models[f"slim {s:.0%}"] = sp.slim(dense, masks).to(dev)
    opts = {k: torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
            for k, m in models.items()}

    def step(k):
        m, opt = models[k], opts[k]
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(m(x), y).backward()
        opt.step()

    for m in models.values():
        m.train()
    med, n_reps = time_rounds({k: (lambda k=k: step(k)) for k in models}, dev, reps, 30.0)
    params = {k: sum(p.numel() for p in m.parameters()) for k, m in models.items()}
    return [{"model": k, "params": params[k], "seconds": t, "speedup": med["dense"] / t,
             "reps": n_reps} for k, t in med.items()]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="JSON file to write")
    ap.add_argument("--smoke", action="store_true", help="toy sizes on the CPU (no timings)")
    ap.add_argument("--sections", nargs="+", default=["topk", "optim", "slim"])
    ap.add_argument("--reps", type=int, default=10)
    args = ap.parse_args()
    dev = torch.device("cpu" if args.smoke else "cuda")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench_gpu.py: no CUDA device (use --smoke for the CPU form)")
    res = {"device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu (smoke)",
           "torch": torch.__version__, "dispatch": dispatch.table(), "smoke": args.smoke}
    small = args.smoke
    if small:
        _SMOKE.append(True)
    for section in args.sections:
        t0 = time.perf_counter()
        try:
            if section == "topk":
                res["topk"] = bench_topk(dev, 10**5 if small else 10**9, 60, 0.1,
                                         2 if small else args.reps)
            elif section == "optim":
                res["optim"] = bench_optim(dev, ["resnet18"] if small else
                                           ["resnet18", "20x4096"], [1.0, 0.5, 0.05],
                                           2 if small else args.reps * 2)
            elif section == "slim":
                res["slim"] = bench_slim(dev, 8 if small else 256, 32, [0.8, 0.9, 0.95],
                                         2 if small else args.reps)
            else:
                raise SystemExit(f"bench_gpu.py: unknown section {section!r}")
        except Exception as exc:  # one failing section must not lose the others' results
            res[section] = {"error": f"{type(exc).__name__}: {exc}"}
        res.setdefault("section_seconds", {})[section] = time.perf_counter() - t0
        print(f"== {section}: {json.dumps(res[section])[:2000]}", flush=True)
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    _io.atomic_write_bytes(args.out, json.dumps(res, indent=1).encode())
    failed = [s for s in args.sections if isinstance(res.get(s), dict) and "error" in res[s]]
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
