"""Training step time of the time-to-accuracy contenders on a quiet machine.

``bench_time_to_accuracy.py`` trains every contender to its budget and records every step's
time, but on a machine shared with other jobs those times follow the scheduler as much as the
model (its median step time of the dense ResNet-20 doubled under a load of 7). This script
rebuilds the same contenders (same seed, data, pruning and slim model:
``bench_time_to_accuracy.build``; a parameter count other than the training run's is warned
about and recorded, so a changed library default cannot time another model unnoticed) and
times training steps only, interleaved: in each round
every contender takes ``--steps`` steps (order rotated round by round) of the one training
loop (``sparsepai.experiments.train.train_pass``: zero_grad, forward, cross-entropy, backward,
``MaskedSGD`` step with momentum 0.9 and weight decay 5e-4, as the training runs), for each
torch thread count asked. Run it with nothing else on the machine (it reports the load before
and after); speedups are same-run ratios of medians.

    python benchmarks/bench_step_time.py --variants dense,prospr,prospr+cost,prospr+cost0.5 \\
        --threads 1,2          # -> benchmarks/results/time_to_accuracy/step_time.{json,md}

With ``--from-widths`` a contender is rebuilt from the channels per convolution its training
run kept (``widths``, recorded or in ``widths.json``): the dense model slimmed to those widths
(first channels kept), whose parameter count must equal the run's. It is the same architecture,
so the same step time, without pruning again (ProsPr's scores take a minute per ResNet-18).
Runs without widths are pruned again; on a CPU other than the training run's the scores' rounding
can keep a few other channels, which the parameter check reports.

``bench_time_to_accuracy.py --summarize`` then reports training seconds as these quiet step
times x the steps each run took (the loaded in-run figure stays in its own column).
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
sys.path.insert(0, os.path.dirname(HERE))

import bench_time_to_accuracy as tta  # noqa: E402
from machine import cpu_name  # noqa: E402
from sparsepai import _io  # noqa: E402


def from_widths(name, widths):
    """The dense ``name`` slimmed so that its convolutions have ``widths`` output channels."""
    import torch

    import sparsepai as sp
    from sparsepai.structured.analysis import analyse

    dense = tta.dense_model(name)
    convs = [n for n, m in dense.named_modules() if isinstance(m, torch.nn.Conv2d)]
    if len(convs) != len(widths):
        raise SystemExit(f"bench_step_time: {name} has {len(convs)} convolutions, the widths "
                         f"{len(widths)}")
    width = dict(zip(convs, widths))
    masks = {}
    for g in analyse(dense, torch.zeros(2, 1, 32, 32)).prunable_groups():
        w = {width[p] for p in g.producers if p in width}
        if len(w) != 1:  # coupled convolutions share their channels; a linear has no width
            raise SystemExit(f"bench_step_time: {name}'s group {g.producers} has widths {w}")
        keep = torch.arange(g.size) < w.pop()
        masks.update({p: keep for p in g.producers})
    return sp.slim(dense, masks)


def time_steps(models, batch, threads, rounds, steps):
    """Per label, the seconds of each timed step (``rounds * steps`` of them)."""
    import torch

    from sparsepai.core.train import train_pass
    from sparsepai.optim.masked import MaskedSGD

    torch.set_num_threads(threads)
    opts = {k: MaskedSGD(m.named_parameters(), {}, lr=0.01, momentum=0.9, weight_decay=5e-4)
            for k, m in models.items()}
    times = {k: [] for k in models}

    def run(label, n, record):
        stamps = [time.perf_counter()]
        models[label].train()
        train_pass(models[label], opts[label], [batch] * n, torch.nn.functional.cross_entropy,
                   "bench_step_time", before_batch=lambda i: i and stamps.append(
                       time.perf_counter()))
        stamps.append(time.perf_counter())
        if record:
            times[label] += [b - a for a, b in zip(stamps, stamps[1:])]

    labels = list(models)
    for label in labels:  # warm-up: allocator, oneDNN primitives, optimizer state
        run(label, 2, False)
    for r in range(rounds):
        k = r % len(labels)
        for label in labels[k:] + labels[:k]:
            run(label, steps, True)
    return times


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="resnet20")
    ap.add_argument("--variants", default="dense,prospr,prospr+cost,prospr+cost0.5")
    ap.add_argument("--sparsities", default="0.9")
    ap.add_argument("--seeds", default="0,1,2", help="each seed's masks give other widths")
    ap.add_argument("--threads", default="1,2", help="torch thread counts, comma-separated")
    ap.add_argument("--build-threads", type=int, default=1, help="torch threads while pruning: "
                    "the training runs' (their scores, so their masks, depend on the summation "
                    "order)")
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--steps", type=int, default=3, help="steps per contender per round")
    ap.add_argument("--from-widths", action="store_true", help="rebuild each contender from "
                    "the widths its training run kept instead of pruning again")
    ap.add_argument("--data-root", default=tta.MNIST)
    ap.add_argument("--out", default=tta.OUT, help="a time-to-accuracy folder (its settings "
                    "are used: batch size, pruning batches)")
    args = ap.parse_args()
    with open(os.path.join(args.out, "config.json")) as f:
        settings = json.load(f)
    labels = tta.contenders(args.variants.split(","),
                            [float(s) for s in args.sparsities.split(",")])
    threads = [int(t) for t in args.threads.split(",")]
    if any(t < 1 for t in threads):
        raise SystemExit(f"bench_step_time: --threads must be positive, got {args.threads!r}")

    import torch

    train_set, _ = tta.mnist32(args.data_root, settings["train_images"], 16)
    batch = (train_set[:settings["batch"]][0], train_set[:settings["batch"]][1])
    path = os.path.join(args.out, "step_time.json")
    result = {"machine": cpu_name(), "cores": os.cpu_count(), "torch": torch.__version__,
              "settings": settings, "models": {}, "invocations": []}
    if os.path.exists(path):  # other seeds or contenders timed before: kept, same machine only
        with open(path) as f:
            old = json.load(f)
        if (old["machine"], old["settings"]) != (result["machine"], settings):
            raise SystemExit(f"bench_step_time: {path} was measured on another machine or "
                             "settings; use another --out")
        result = old
    call = {"argv": sys.argv[1:], "date": time.strftime("%Y-%m-%d %H:%M"),
            "load_before": os.getloadavg()[0]}
    runs = {(r["model"], r["variant"], r["seed"]): r for r in tta.load_runs(args.out, settings)}
    trained = {k: r["params"] for k, r in runs.items()}
    for name in args.models.split(","):
        result["models"].setdefault(name, {})
        for seed in (int(s) for s in args.seeds.split(",")):
            torch.set_num_threads(args.build_threads)
            # only what was trained: the table needs those, and a contender costs build and
            # round time (a sparsity list crosses every variant)
            mine = [label for label in labels if (name, label, seed) in trained]
            if len(mine) < len(labels):
                print(f"bench_step_time: {name} seed {seed}: no training run of "
                      f"{sorted(set(labels) - set(mine))} in {args.out}: not timed", flush=True)
            # runs without widths are pruned again (on other CPUs the scores' rounding can
            # pick other channels: the parameter check below says so)
            models = {label: from_widths(name, runs[(name, label, seed)]["widths"])
                      if args.from_widths and runs[(name, label, seed)].get("widths")
                      else tta.build(name, label, seed, train_set, settings)[0]
                      for label in mine}
            # the very model the training run had? A default changed since the run (as
            # ProsPr's cost weighting once did) would time another model: recorded and said
            mismatch = {}
            for label, m in models.items():
                want = trained.get((name, label, seed))
                got = sum(p.numel() for p in m.parameters())
                if want is not None and want != got:
                    mismatch[label] = {"rebuilt": got, "trained": want}
                    print(f"bench_step_time: warning: {name} {label} seed {seed} rebuilt with "
                          f"{got} parameters, its training run had {want}", flush=True)
            result.setdefault("param_mismatch", {})[f"{name}/{seed}"] = mismatch
            per = result["models"][name][str(seed)] = {}
            for t in threads:
                times = time_steps(models, batch, t, args.rounds, args.steps)
                per[str(t)] = {k: {"median": statistics.median(v),
                                   "q25": statistics.quantiles(v, n=4)[0],
                                   "q75": statistics.quantiles(v, n=4)[2], "n": len(v)}
                               for k, v in times.items()}
                print(f"{name} seed {seed}, {t} thread(s): " + ", ".join(
                    f"{k} {s['median'] * 1e3:.0f} ms" for k, s in per[str(t)].items()),
                      flush=True)
    call["load_after"] = os.getloadavg()[0]
    result["invocations"].append(call)
    _io.atomic_write_bytes(path, json.dumps(result, indent=1).encode())
    lines = [f"Quiet step times (`python benchmarks/bench_step_time.py`), {result['machine']}, "
             f"{result['cores']} cores; median (q25-q75) of the interleaved steps (batch "
             f"{settings['batch']}) of one invocation; speedup = dense median / median, same "
             "invocation. Invocations (load average before -> after):", ""] + [
             f"- `{' '.join(c['argv'])}` ({c['date']}, load {c['load_before']:.2f} -> "
             f"{c['load_after']:.2f})" for c in result["invocations"]] + [
             "", "| model | seed | threads | contender | step ms | speedup vs dense |",
             "|---|---|---|---|---|---|"]
    for name, seeds in result["models"].items():
        for seed, per in seeds.items():
            for t, rows in per.items():
                dense = rows.get("dense")
                for k, s in rows.items():
                    sp_ = f"{dense['median'] / s['median']:.2f}x" if dense else "-"
                    lines.append(f"| {name} | {seed} | {t} | {k} | {s['median'] * 1e3:.0f} "
                                 f"({s['q25'] * 1e3:.0f}-{s['q75'] * 1e3:.0f}) | {sp_} |")
    _io.atomic_write_bytes(os.path.join(args.out, "step_time.md"),
                           ("\n".join(lines) + "\n").encode())
    print("\n".join(lines))


if __name__ == "__main__":
    main()
