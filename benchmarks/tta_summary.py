"""Summaries of ``bench_time_to_accuracy.py``'s runs: per model and contender the final accuracy,
the training seconds (a step time x steps), the same-seed speedup over dense and the seconds to
reach dense accuracy - 1 point; and reading a folder's runs. ``bench_time_to_accuracy.py
--summarize`` writes them out."""

from __future__ import annotations

import json
import os
import statistics

from sparsepai import _io

# contender name -> the library's method (3SP is SNIP's scores per channel)
METHODS = {"prospr": "prospr", "3sp": "snip", "magnitude": "magnitude", "random": "random"}
# what a folder's runs must share (config.json)
SETTINGS = ("epochs", "train_images", "test_images", "batch", "lr", "channels_last",
            "prune_batches", "prune_batch")


def load_runs(out: str, settings: dict) -> list:
    """Finished runs of ``out`` (after checking its settings are ``settings``)."""
    cfg_path = os.path.join(out, "config.json")
    if os.path.exists(cfg_path):
        with open(cfg_path) as f:
            old = json.load(f)
        diff = {k: (old.get(k), settings[k]) for k in SETTINGS if old.get(k) != settings[k]}
        if diff:
            raise SystemExit(f"bench_time_to_accuracy: {out} holds runs of other settings "
                             f"(setting: (there, asked)) {diff}; use another --out")
    else:
        os.makedirs(out, exist_ok=True)
        _io.atomic_write_json(cfg_path, settings)
    path = os.path.join(out, "runs.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        runs = [json.loads(line) for line in f if line.strip()]
    known = known_widths(out)
    for r in runs:
        r.setdefault("widths", known.get(f"{r['model']}/{r['variant']}/{r['seed']}"))
    return runs


def known_widths(out: str) -> dict:
    """``out/widths.json``: ``{"model/variant/seed": widths}`` of runs that predate the record."""
    path = os.path.join(out, "widths.json")
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)


def robust_seconds(run: dict, step: float | None = None) -> list:
    """Training seconds at the end of each epoch, as a time per step (by default the run's own
    median) times the steps taken: a step's work is the same all run long, so this keeps what
    the model costs and drops the bursts of load other processes put on a shared machine
    (``train_seconds`` keeps the raw wall-clock)."""
    med = statistics.median(run["step_seconds"]) if step is None else step
    steps = len(run["step_seconds"]) // len(run["test_acc"])
    return [med * steps * (e + 1) for e in range(len(run["test_acc"]))]


def quiet_step(run: dict, quiet: dict | None, threads: str = "1"):
    """The run's step time in ``bench_step_time.py``'s ``step_time.json``, or None."""
    try:
        return quiet["models"][run["model"]][str(run["seed"])][threads][run["variant"]]["median"]
    except (KeyError, TypeError):
        return None


def summarize(runs: list, quiet: dict | None = None) -> dict:
    """Per model, per contender: seeds, final accuracy mean/std, mean training seconds (see
    :func:`robust_seconds`: with the quiet step times of ``quiet`` where every run of the model
    has one, else the runs' own; ``loaded`` those of the runs themselves, ``wall`` the raw
    ones), the same-seed speedup over dense, and the seconds to reach dense - 1 point."""
    quiet_models = {r["model"] for r in runs} - {r["model"] for r in runs
                                                 if quiet_step(r, quiet) is None}
    runs = [dict(r, wall_seconds=r["train_seconds"], loaded=robust_seconds(r)[-1],
                 train_seconds=robust_seconds(r, quiet_step(r, quiet) if r["model"] in
                                              quiet_models else None)) for r in runs]
    out = {}
    for name in dict.fromkeys(r["model"] for r in runs):
        mine = [r for r in runs if r["model"] == name]
        dense = {r["seed"]: r for r in mine if r["variant"] == "dense"}
        target = (statistics.mean(r["test_acc"][-1] for r in dense.values()) - 0.01
                  if dense else None)
        rows = {}
        for label in dict.fromkeys(r["variant"] for r in mine):
            rs = [r for r in mine if r["variant"] == label]
            final = [r["test_acc"][-1] for r in rs]
            secs = [r["train_seconds"][-1] for r in rs]
            speed = [dense[r["seed"]]["train_seconds"][-1] / r["train_seconds"][-1]
                     for r in rs if r["seed"] in dense]
            reach = []
            for r in rs:
                hit = [t for t, a in zip(r["train_seconds"], r["test_acc"])
                       if target is not None and a >= target]
                reach.append(hit[0] if hit else None)
            got = [t for t in reach if t is not None]
            rows[label] = {
                "seeds": sorted(r["seed"] for r in rs), "acc": statistics.mean(final),
                "acc_std": statistics.pstdev(final), "seconds": statistics.mean(secs),
                "wall": statistics.mean(r["wall_seconds"][-1] for r in rs),
                "loaded": statistics.mean(r["loaded"] for r in rs),
                "speedup": statistics.mean(speed) if speed else None,
                "reached": len(got), "to_target": statistics.median(got) if got else None,
                "params": rs[0]["params"], "flops": rs[0]["flops"],
                # the fewest channels any convolution keeps, over the seeds (None: unknown)
                "narrowest": (min(min(r["widths"]) for r in rs)
                              if all(r.get("widths") for r in rs) else None),
                "prune_seconds": statistics.mean(r["prune_seconds"] for r in rs),
                # sp.sparsify's measurements before training (sparse-kernel runs only)
                "sparsify_seconds": (statistics.mean(r["sparsify_seconds"] for r in rs)
                                     if all("sparsify_seconds" in r for r in rs) else None),
                "epochs": min(len(r["test_acc"]) for r in rs),
                "curve": [(statistics.mean(r["train_seconds"][e] for r in rs),
                           statistics.mean(r["test_acc"][e] for r in rs))
                          for e in range(min(len(r["test_acc"]) for r in rs))]}
        out[name] = {"target": target, "rows": rows, "quiet": name in quiet_models}
    return out


def order(label: str):
    """Sort key of a contender: sparsity, then method, then plain before compute-weighted."""
    base, _, s = label.partition("@")
    method, _, weight = base.partition("+")
    rank = ("dense", "default") + tuple(METHODS)
    return (float(s or 0), rank.index(method) if method in rank else len(rank), weight)


def side_by_side(summary: dict) -> str:
    """The models of ``summary`` (one folder's or several merged) as one markdown table: a row
    per contender, per model its final accuracy (mean +- std over seeds; the seeds if fewer
    than dense has), points against dense, the same-seed speedup (dense: its seconds), the
    median seconds to reach dense - 1 point (and in how many seeds), FLOPs against dense and
    the fewest channels any convolution keeps in any seed (1: a bottleneck)."""
    names = list(summary)
    labels = sorted({label for s in summary.values() for label in s["rows"]}, key=order)
    head = "| contender | " + " | ".join(
        f"{n} acc | vs dense | speedup | to dense - 1 pt | FLOPs / dense | fewest channels"
        for n in names) + " |"
    lines = [head, "|---|" + "---:|" * 6 * len(names)]
    for label in labels:
        cells = []
        for n in names:
            r, d = summary[n]["rows"].get(label), summary[n]["rows"].get("dense")
            if r is None:
                cells += ["not run", "", "", "", "", ""]
                continue
            seeds, reached = r["seeds"], r["reached"]
            few = d is not None and len(seeds) < len(d["seeds"])
            spread = f" +- {100 * r['acc_std']:.2f}" if len(seeds) > 1 else ""
            which = f" (seed{'s' * (len(seeds) > 1)} {','.join(map(str, seeds))})" if few else ""
            reach = ("not reached" if not reached else f"{r['to_target']:,.0f} s"
                     + (f" ({reached} of {len(seeds)})" if reached < len(seeds) else ""))
            speed = (f"1.00x ({r['seconds']:,.0f} s)" if label == "dense" else
                     f"{r['speedup']:.2f}x" if r["speedup"] else "-")
            cells += [f"{100 * r['acc']:.2f}{spread}%{which}",
                      f"{100 * (r['acc'] - d['acc']):+.2f}" if d and label != "dense" else "",
                      speed, reach, f"{r['flops'] / d['flops']:.3f}" if d else "-",
                      "-" if r["narrowest"] is None else str(r["narrowest"])]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
