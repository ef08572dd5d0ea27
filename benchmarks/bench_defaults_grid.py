"""The defaults grid: every contender on protocols it was not tuned for, judged by its worst cell.

A cell is one training protocol: a model (``lenet5``, ``smallconv``, ``resnet20``, ``vgg11``), an
initialisation (``default``: PyTorch's own ``reset_parameters``; ``he``: the He-normal init of
``sparsepai.experiments.models``), a budget (epochs, SGD or AdamW, cosine schedule or constant
rate) and the
scoring data (``k`` batches of 128 per scoring batch: ProsPr's and SNIP's option ``batches``).
Cells vary one axis at a time around a short base protocol (2 epochs of the MNIST split, SGD with
momentum 0.9, lr 0.05, weight decay 5e-4, cosine, batch 128, 1 scoring batch; LeNet-5
3 epochs), plus corners.

Data: the MNIST split (``../shared/data/mnist``: first 8,000 images train, last 2,000 evaluate;
28x28, VGG-11 zero-padded to 32x32). Every run prunes at initialisation, trains with the one
training loop (``sparsepai.experiments.train.train``) and records the final test accuracy.

Unstructured cells run the contenders of ``CONTENDERS`` at 95% and 98%; structured cells
(``structured`` in the cell name) run the dense model and structured ProsPr at 90%
(``STRUCTURED``), slimmed with ``sp.slim``, and time each model's training step on one thread,
interleaved, with ``/tmp/sparsepai-timing.lock`` held (speedup = dense median step / slim median
step, same run).

Resumable: each finished run is one line of ``<out>/runs.jsonl``; rerunning skips finished
runs. A run recorded with other settings for its cell is refused. ``--cells`` chooses and orders
the cells (the cells that decide the defaults first); ``--summarize`` only rewrites
``table.md``, ``summary.json`` and ``grid.png`` from the runs; ``--layer-densities`` only prunes
and writes each contender's per-layer mask densities (``layer_densities.md``); ``--retime``
re-measures the structured models' step speed-ups with the machine otherwise idle (the grid's
own timings run beside its training) into ``retimed.jsonl``, which the tables then use.

    python benchmarks/bench_defaults_grid.py --cells lenet5-default resnet20-he
    python benchmarks/bench_defaults_grid.py --summarize
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import json
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

from machine import cpu_name  # noqa: E402
from sparsepai import _io  # noqa: E402

OUT = os.path.join(HERE, "results", "defaults_grid")
MNIST = os.path.join(os.path.dirname(os.path.dirname(HERE)), "shared", "data", "mnist")
COLLAPSE = 0.2
SPARSITIES = (0.95, 0.98)
STRUCTURED_SPARSITY = 0.9
TIMING_LOCK = "/tmp/sparsepai-timing.lock"

# label: (method, options); every ProsPr label names its score and batch protocol explicitly, so
# the results do not depend on the library's defaults at the time of the run (rows record them)
CONTENDERS = {
    "prospr_m1": ("prospr", {"first_order": False, "same_batch": False}),  # the paper
    "prospr_same": ("prospr", {"first_order": False, "same_batch": True}),  # the official code
    "prospr_fo": ("prospr", {"first_order": True, "same_batch": False}),
    "prospr_fo_same": ("prospr", {"first_order": True, "same_batch": True}),
    "prospr_lr0.01_same": ("prospr", {"first_order": False, "inner_lr": 0.01,
                                      "same_batch": True}),
    "prospr_lr1_same": ("prospr", {"first_order": False, "inner_lr": 1.0, "same_batch": True}),
    # the scale-aware inner step: every tensor's first step moves it by inner_lr of its norm
    "prospr_rel0.01": ("prospr", {"first_order": False, "inner_step": "relative",
                                  "inner_lr": 0.01, "same_batch": False}),
    "prospr_rel0.05": ("prospr", {"first_order": False, "inner_step": "relative",
                                  "inner_lr": 0.05, "same_batch": False}),
    "snip": ("snip", {}),
    "synflow": ("synflow", {}),
    "magnitude": ("magnitude", {}),
    "random": ("random", {}),
}
# structured ProsPr at 90% (label: options); "cost" is cost_weighting, "min8" min_per_layer=8
# (else a floor of one channel), "fo" the first-order score; every label names its ProsPr
# options explicitly, so that a change of the library's defaults does not change a label's model
_FULL = {"first_order": False, "same_batch": False}
STRUCTURED = {
    "dense": None,
    "s_cost1": {**_FULL, "cost_weighting": True, "min_per_layer": 1},
    "s_cost0.5": {**_FULL, "cost_weighting": 0.5, "min_per_layer": 1},
    "s_cost1_min8": {**_FULL, "cost_weighting": True, "min_per_layer": 8},
    "s_cost0.5_min8": {**_FULL, "cost_weighting": 0.5, "min_per_layer": 8},
    "s_fo_cost1": {**_FULL, "first_order": True, "cost_weighting": True, "min_per_layer": 1},
    "s_fo_cost0.5_min8": {**_FULL, "first_order": True, "cost_weighting": 0.5,
                          "min_per_layer": 8},
}
SCORED = ("prospr", "snip")  # methods whose scoring data is `batches` batches


@dataclasses.dataclass(frozen=True)
class Cell:
    """One protocol. ``batches``: scoring batches per D_m (ProsPr) or per gradient (SNIP)."""

    model: str
    init: str = "default"
    epochs: int = 2
    optimizer: str = "sgd"
    lr: float = 0.05
    cosine: bool = True
    batches: int = 1
    seeds: tuple = (0, 1, 2, 3, 4)
    contenders: tuple = tuple(CONTENDERS)


# the contenders of every cell but the first (which has all of them)
_MAIN = ("prospr_m1", "prospr_same", "prospr_fo", "prospr_lr0.01_same", "prospr_rel0.01",
         "prospr_rel0.05", "snip", "synflow", "magnitude")
# ResNet-20: without the relative step at 0.05 (seed 0 at 95%: 46.7 against the paper
# protocol's 70.1; larger inner steps hurt this network)
_RESNET = tuple(c for c in _MAIN if c != "prospr_rel0.05")
_STRUCT = tuple(STRUCTURED)
# name -> cell; the order is the default run order (the cells that decide the defaults first)
CELLS = {
    "lenet5-default": Cell("lenet5", epochs=3),
    "resnet20-he": Cell("resnet20", "he", contenders=_RESNET),
    "lenet5-he": Cell("lenet5", "he", epochs=3, contenders=_MAIN + ("random",)),
    "resnet20-default": Cell("resnet20", "default", contenders=_RESNET),
    "lenet5-default-adamw": Cell("lenet5", epochs=3, optimizer="adamw", lr=1e-3,
                                 contenders=_MAIN),
    "lenet5-default-long": Cell("lenet5", epochs=8, contenders=_MAIN),
    "lenet5-default-constant": Cell("lenet5", epochs=3, cosine=False, contenders=_MAIN),
    "lenet5-default-b4": Cell("lenet5", epochs=3, batches=4, contenders=_MAIN),
    "lenet5-default-b16": Cell("lenet5", epochs=3, batches=16, contenders=_MAIN),
    "structured-resnet20-he": Cell("resnet20", "he", seeds=(0, 1),
                                   contenders=("dense", "s_cost1", "s_cost0.5_min8", "s_fo_cost1",
                                               "s_fo_cost0.5_min8")),
    "smallconv-default": Cell("smallconv", contenders=_MAIN),
    "smallconv-he": Cell("smallconv", "he", contenders=_MAIN),
    "resnet20-he-adamw": Cell("resnet20", "he", optimizer="adamw", lr=1e-3, seeds=(0, 1, 2),
                              contenders=_MAIN),
    "resnet20-he-b4": Cell("resnet20", "he", batches=4, seeds=(0, 1, 2), contenders=_MAIN),
    "lenet5-he-adamw-long-constant": Cell("lenet5", "he", epochs=8, optimizer="adamw", lr=1e-3,
                                          cosine=False, contenders=_MAIN),
    "structured-resnet20-he-long": Cell("resnet20", "he", epochs=8, seeds=(0, 1),
                                        contenders=_STRUCT),
    "structured-lenet5-default": Cell("lenet5", epochs=3, seeds=(0, 1, 2), contenders=_STRUCT),
    "structured-lenet5-default-long": Cell("lenet5", epochs=8, seeds=(0, 1), contenders=_STRUCT),
    "structured-smallconv-default": Cell("smallconv", seeds=(0, 1, 2), contenders=_STRUCT),
    "resnet20-he-long": Cell("resnet20", "he", epochs=8, seeds=(0, 1, 2),
                             contenders=("prospr_m1", "prospr_same", "prospr_fo", "snip",
                                         "synflow", "magnitude")),
    "vgg11-he": Cell("vgg11", "he", seeds=(0, 1, 2), contenders=("prospr_m1", "prospr_same",
                                                                  "prospr_fo", "snip", "synflow",
                                                                  "magnitude")),
}


def settings(name: str) -> dict:
    """What a run of cell ``name`` depends on (its rows carry it; a mismatch is refused)."""
    c = CELLS[name]
    return {"model": c.model, "init": c.init, "epochs": c.epochs, "optimizer": c.optimizer,
            "lr": c.lr, "cosine": c.cosine, "batches": c.batches, "batch_size": 128,
            "dataset": "mnist-split", "image_size": 32 if c.model == "vgg11" else 28}


def load_data(root: str, image_size: int):
    import torch
    import torch.nn.functional as F

    from sparsepai.experiments.data import load_dataset

    train, test, _ = load_dataset("mnist", root)
    if image_size == 28:
        return train, test
    pad = (image_size - 28) // 2

    def convert(ds):
        xs = torch.stack([ds[i][0] for i in range(len(ds))])
        ys = torch.tensor([int(ds[i][1]) for i in range(len(ds))])
        return torch.utils.data.TensorDataset(F.pad(xs, (pad, pad, pad, pad)), ys)

    return convert(train), convert(test)


def build_model(st: dict, seed: int):
    """The cell's model for ``seed``, freshly initialised (``default``: every module's own
    ``reset_parameters``, as ``torch.nn`` builds it)."""
    import torch

    from sparsepai.experiments.models import get_model

    torch.manual_seed(seed)
    model = get_model(st["model"], 10, 1, st["image_size"])
    if st["init"] == "default":
        torch.manual_seed(seed)
        for m in model.modules():
            if m is not model and hasattr(m, "reset_parameters"):
                m.reset_parameters()
    return model


def scoring_data(train_set, seed: int, k: int) -> list:
    """Enough batches of 128 for any contender: two shuffled passes' worth, cut to 4k + 4."""
    import itertools

    from sparsepai.experiments.data import loader

    both = itertools.chain(loader(train_set, 128, shuffle=True, seed=seed),
                           loader(train_set, 128, shuffle=True, seed=seed + 10_000))
    return list(itertools.islice(both, 4 * k + 4))


def run_unstructured(st, label, sparsity, seed, data) -> dict:
    import sparsepai as sp
    from sparsepai.experiments.train import train

    train_set, test_set = data
    method, options = CONTENDERS[label]
    options = dict(options)
    if method in SCORED and st["batches"] > 1:
        options["batches"] = st["batches"]
    if method == "random":
        options["seed"] = seed
    model = build_model(st, seed)
    t0 = time.perf_counter()
    masks = sp.prune(model, method, sparsity, scoring_data(train_set, seed, st["batches"]),
                     **options)
    prune_s = time.perf_counter() - t0
    res = train(model, masks, train_set, test_set, train_config(st, seed), progress=False)
    return {"test_acc": res["test_acc"], "curve": res["test_acc_curve"], "options": options,
            "prune_seconds": round(prune_s, 3), "train_seconds": round(res["train_seconds"][-1], 1)}


def train_config(st, seed):
    from sparsepai.experiments.train import TrainConfig

    return TrainConfig(epochs=st["epochs"], batch_size=st["batch_size"],
                       optimizer=st["optimizer"], lr=st["lr"], momentum=0.9,
                       weight_decay=5e-4, cosine=st["cosine"], seed=seed)


@contextlib.contextmanager
def timing_lock(wait_s: float = 90.0):
    """The machine's timing lock, waited for up to ``wait_s`` seconds; yields whether it is held
    (another job may hold it for long: the timing then runs without it, and the row says so)."""
    with open(TIMING_LOCK, "a") as f:
        deadline = time.monotonic() + wait_s
        held = False
        while not held:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                held = True
            except BlockingIOError:
                if time.monotonic() > deadline:
                    break
                time.sleep(1.0)
        try:
            yield held
        finally:
            if held:
                fcntl.flock(f, fcntl.LOCK_UN)


def step_times(models: dict, batch, rounds: int = 3, steps: int = 5) -> tuple:
    """Median seconds of one training step per model (interleaved rounds) and whether the
    timing lock was held."""
    import bench_step_time

    with timing_lock() as held:
        times = bench_step_time.time_steps(models, batch, 1, rounds, steps)
    return {k: statistics.median(v) for k, v in times.items()}, held


def structured_model(st, label, seed, train_set):
    """The model a structured row trains: the cell's dense model of ``seed``, pruned by
    structured ProsPr with ``label``'s options and slimmed (the dense model itself for
    ``dense``). It depends on the model, init, scoring batches, label and seed, not on the
    training budget: :func:`slim_key`."""
    import sparsepai as sp

    dense = build_model(st, seed)
    if STRUCTURED[label] is None:
        return dense
    masks = sp.prune(dense, "prospr", STRUCTURED_SPARSITY,
                     scoring_data(train_set, seed, st["batches"]), structured=True,
                     **STRUCTURED[label])
    return sp.slim(dense, masks)


def slim_key(st: dict, label: str, seed: int) -> str:
    """What a structured row's model, and so its step time, depends on (cells that differ only
    in their training budget share it)."""
    return json.dumps({"model": st["model"], "init": st["init"], "batches": st["batches"],
                       "image_size": st["image_size"], "label": label, "seed": seed},
                      sort_keys=True)


def time_against_dense(st, label, seed, model, train_set, rounds=3, steps=5):
    """Median step seconds of ``model`` and of the dense model of the same seed, interleaved,
    on one batch of the training set, and whether the timing lock was held."""
    import copy

    import torch

    ref = build_model(st, seed)  # the dense model of the same seed, for a same-run step ratio
    x, y = next(iter(torch.utils.data.DataLoader(train_set, batch_size=128)))
    return step_times({"dense": ref, label: copy.deepcopy(model)}, (x, y), rounds, steps)


def retime(rows, data_root, out):
    """Re-measure the step speed-up of every structured model of ``rows`` (one per
    :func:`slim_key`), appending to ``<out>/retimed.jsonl``; keys already there are skipped.
    Run it with the machine otherwise idle: the grid's own timings run beside its training."""
    from sparsepai.experiments.sweep import append_row, load_rows

    path = os.path.join(out, "retimed.jsonl")
    done = {r["key"] for r in load_rows(path)}
    todo = {}
    for r in rows:
        if r["cell"].startswith("structured") and r["label"] != "dense":
            todo.setdefault(slim_key(r["settings"], r["label"], r["seed"]), r)
    data, size = None, None
    for key, r in todo.items():
        if key in done:
            continue
        st = r["settings"]
        if size != st["image_size"]:
            data, size = load_data(data_root, st["image_size"]), st["image_size"]
        model = structured_model(st, r["label"], r["seed"], data[0])
        med, held = time_against_dense(st, r["label"], r["seed"], model, data[0], rounds=5)
        row = {"key": key, "step_seconds": med[r["label"]], "dense_step_seconds": med["dense"],
               "speedup": med["dense"] / med[r["label"]], "timing_lock": held,
               "cpu": cpu_name(), "load": os.getloadavg()[0]}
        append_row(path, row)
        print(f"{key}: {row['speedup']:.2f}x", flush=True)


def run_structured(st, label, seed, data) -> dict:
    from sparsepai.experiments.train import train

    train_set, test_set = data
    t0 = time.perf_counter()
    model = structured_model(st, label, seed, train_set)
    prune_s = time.perf_counter() - t0
    med, held = time_against_dense(st, label, seed, model, train_set)
    res = train(model, None, train_set, test_set, train_config(st, seed), progress=False)
    return {"test_acc": res["test_acc"], "curve": res["test_acc_curve"],
            "prune_seconds": round(prune_s, 3), "train_seconds": round(res["train_seconds"][-1], 1),
            "params": sum(p.numel() for p in model.parameters()),
            "step_seconds": med[label], "dense_step_seconds": med["dense"],
            "speedup": med["dense"] / med[label], "timing_lock": held}


def plan(cells) -> list:
    """(cell, label, sparsity, seed) in run order: per cell, seed by seed, every contender at a
    sparsity before the next, so a partial cell has whole seeds."""
    out = []
    for name in cells:
        c = CELLS[name]
        sps = (STRUCTURED_SPARSITY,) if name.startswith("structured") else SPARSITIES
        out += [(name, lab, s, seed) for seed in c.seeds for s in sps for lab in c.contenders]
    return out


def load_runs(path):
    from sparsepai.experiments.sweep import load_rows

    rows = load_rows(path)
    for r in rows:
        if r["cell"] in CELLS and r["settings"] != settings(r["cell"]):
            raise SystemExit(f"{os.path.relpath(path)}: cell {r['cell']!r} was run with other "
                             "settings; use another --out")
    return rows


# ------------------------------------------------------------------------------------------
# summary

def summarize(rows, retimed=()) -> dict:
    """{cell: {label: {sparsity: {mean, min, std, n, collapsed, ...}}}}. A structured
    contender's ``speedup`` is the median over its seeds of the re-timed speed-ups
    (``retimed``, rows of :func:`retime`) where every seed has one (``retimed``: True), else
    of the speed-ups its runs measured."""
    again = {}
    for r in retimed:
        again.setdefault(r["key"], []).append(r["speedup"])
    out = {}
    for r in rows:
        out.setdefault(r["cell"], {}).setdefault(r["label"], {}).setdefault(
            f"{r['sparsity']:g}", []).append(r)
    for cell, labs in out.items():
        for lab, by_s in labs.items():
            for s, rs in by_s.items():
                acc = [r["test_acc"] for r in rs]
                d = {"mean": statistics.mean(acc), "min": min(acc),
                     "std": statistics.pstdev(acc) if len(acc) > 1 else 0.0, "n": len(acc),
                     "collapsed": sum(a < COLLAPSE for a in acc),
                     "seeds": [r["seed"] for r in rs]}
                if "speedup" in rs[0]:
                    keys = [slim_key(r["settings"], r["label"], r["seed"]) for r in rs]
                    d["retimed"] = lab != "dense" and all(k in again for k in keys)
                    d["speedup"] = statistics.median(
                        statistics.median(again[k]) for k in keys) if d["retimed"] else \
                        statistics.median(r["speedup"] for r in rs)
                by_s[s] = d
    return out


def verdict(summary) -> list:
    """Per unstructured ProsPr contender, the cells where it misses a target: a collapse at 95%
    where SNIP has none, or a mean below SNIP's (95% and 98%); and per structured contender the
    cells where it loses more than 2 points against dense or is slower than 2x."""
    lines = []
    for lab in [c for c in CONTENDERS if c.startswith("prospr")]:
        fails, cells, missing = [], 0, []
        for cell, labs in summary.items():
            if cell.startswith("structured") or lab not in labs or "snip" not in labs:
                continue
            cells += 1
            for s in ("0.95", "0.98"):
                a, b = labs[lab].get(s), labs["snip"].get(s)
                if not a or not b or a["n"] < b["n"]:
                    missing.append(f"{cell} {s}" + (f" ({a['n']} of {b['n']} seeds)" if a and b
                                                   else ""))
                if not a or not b:
                    continue
                if s == "0.95" and a["collapsed"] and not b["collapsed"]:
                    fails.append(f"{cell} {s}: {a['collapsed']}/{a['n']} collapsed")
                if a["mean"] < b["mean"]:
                    fails.append(f"{cell} {s}: {100 * a['mean']:.1f} < SNIP "
                                 f"{100 * b['mean']:.1f} (gap {100 * (b['mean'] - a['mean']):.1f})")
        lines.append(f"- `{lab}` ({cells} cells): " + (
            "meets every target" if not fails else f"{len(fails)} misses: " + "; ".join(fails))
            + (f"; incomplete: {', '.join(missing)}" if missing else ""))
    for lab in [c for c in STRUCTURED if c != "dense"]:
        fails, cells = [], 0
        for cell, labs in summary.items():
            if not cell.startswith("structured") or lab not in labs or "dense" not in labs:
                continue
            cells += 1
            a, d = labs[lab]["0.9"], labs["dense"]["0.9"]
            gap = 100 * (d["mean"] - a["mean"])
            if gap > 2 or a["speedup"] < 2:
                fails.append(f"{cell}: {-gap:+.2f} points against dense at {a['speedup']:.2f}x")
        if cells:
            lines.append(f"- `{lab}` ({cells} cells): " + (
                "meets every target" if not fails else "misses " + "; ".join(fails)))
    return lines


# the compact table's columns: the default, the paper's and the official code's protocols, and
# the baselines a user would reach for instead
COMPACT = ("prospr_fo", "prospr_m1", "prospr_same", "snip", "synflow", "magnitude")


def compact(summary) -> str:
    """One row per (unstructured cell, sparsity), one column per COMPACT contender: the mean
    [worst seed] (collapsed runs/runs, when any), so the default reads against SNIP cell by
    cell."""
    lines = ["| cell | sparsity | " + " | ".join(COMPACT) + " |",
             "| --- | --- | " + " | ".join("---" for _ in COMPACT) + " |"]
    for cell in [c for c in CELLS if c in summary and not c.startswith("structured")]:
        for sp in ("0.95", "0.98"):
            row = []
            for lab in COMPACT:
                d = summary[cell].get(lab, {}).get(sp)
                row.append("-" if not d else f"{100 * d['mean']:.1f} [{100 * d['min']:.1f}]"
                           + (f" ({d['collapsed']}/{d['n']})" if d["collapsed"] else "")
                           + ("" if d["n"] > 1 else " (1 seed)"))
            lines.append(f"| {cell} | {float(sp):.0%} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def table(summary) -> str:
    lines = []
    for cell in [c for c in CELLS if c in summary] + sorted(set(summary) - set(CELLS)):
        labs = summary[cell]
        st = settings(cell) if cell in CELLS else {}
        lines += ["", f"### {cell}", "", ", ".join(f"{k} {v}" for k, v in st.items()), ""]
        if cell.startswith("structured"):
            lines += ["| contender | acc % mean | min | seeds | step speedup vs dense |",
                      "| --- | --- | --- | --- | --- |"]
            for lab in [x for x in STRUCTURED if x in labs]:
                d = labs[lab]["0.9"]
                lines.append(f"| {lab} | {100 * d['mean']:.2f} | {100 * d['min']:.2f} | {d['n']} | "
                             f"{d.get('speedup', 1.0):.2f}x" + (" (re-timed)" if d.get("retimed")
                                                                 else "") + " |")
            continue
        lines += ["| contender | 95%: mean [min] (collapsed/n) | 98%: mean [min] (collapsed/n) |",
                  "| --- | --- | --- |"]
        for lab in [x for x in CONTENDERS if x in labs]:
            cells = []
            for s in ("0.95", "0.98"):
                d = labs[lab].get(s)
                cells.append(f"{100 * d['mean']:.1f} [{100 * d['min']:.1f}] "
                             f"({d['collapsed']}/{d['n']})" if d else "-")
            lines.append(f"| {lab} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(summary, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = [c for c in CELLS if c in summary and not c.startswith("structured")]
    labs = [c for c in CONTENDERS if c != "random"]
    if not cells:
        return
    fig, axes = plt.subplots(1, 2, figsize=(13, 0.45 * len(cells) + 2.5), sharey=True)
    colors = plt.get_cmap("tab10").colors
    for ax, s in zip(axes, ("0.95", "0.98")):
        for i, lab in enumerate(labs):
            ys, xs, lo = [], [], []
            for j, cell in enumerate(cells):
                d = summary[cell].get(lab, {}).get(s)
                if d:
                    ys.append(j + (i - len(labs) / 2) * 0.07)
                    xs.append(100 * d["mean"])
                    lo.append(100 * d["min"])
            ax.scatter(xs, ys, color=colors[i % 10], marker="o" if i < 10 else "s", s=18,
                       label=lab)
            ax.scatter(lo, ys, color=colors[i % 10], marker="|", s=30)
        ax.set_yticks(range(len(cells)))
        ax.set_yticklabels(cells, fontsize=8)
        ax.set(xlabel="test accuracy % (dot: mean over seeds; bar: worst seed)",
               title=f"{float(s):.0%} sparsity")
        ax.grid(True, alpha=0.3)
    axes[1].legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    _io.save_figure(path, fig, dpi=110)
    plt.close(fig)


def report(rows, out, command):
    from sparsepai.experiments.sweep import load_rows

    s = summarize(rows, load_rows(os.path.join(out, "retimed.jsonl")))
    head = [f"# defaults grid (MNIST split; CPU: {cpu_name()}; one thread per run, a shared "
            "machine)", "", f"command: `{command}`", "",
            "Cells not listed have not been run. Accuracy: final test accuracy, %.", "",
            "## targets (worst cell)", ""] + verdict(s) + [
            "", "## the default against SNIP, cell by cell",
            "", "mean [worst seed] (collapsed runs / runs, when any), test accuracy %", "",
            compact(s)]
    _io.atomic_write_bytes(os.path.join(out, "table.md"),
                           ("\n".join(head) + "\n" + table(s) + "\n").encode())
    _io.atomic_write_json(os.path.join(out, "summary.json"),
                          {"command": command, "cpu": cpu_name(),
                           "cells": {c: settings(c) for c in s if c in CELLS},
                           "summary": s})
    plot(s, os.path.join(out, "grid.png"))


def layer_densities(cells, labels, sparsities, seeds, data_root, out):
    """Each contender's per-layer mask densities in each cell (pruning only, no training):
    where a method puts its weights, which decides whether a layer, or a whole stage,
    collapses. Writes ``<out>/layer_densities.md`` and ``.json``."""
    import warnings

    import sparsepai as sp

    rows, data, size = [], None, None
    for cell in cells:
        st = settings(cell)
        if size != st["image_size"]:
            data, size = load_data(data_root, st["image_size"]), st["image_size"]
        for seed in seeds:
            for s in sparsities:
                for label in labels:
                    method, options = CONTENDERS[label]
                    options = dict(options)
                    if method in SCORED and st["batches"] > 1:
                        options["batches"] = st["batches"]
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")  # collapses show in the table
                        masks = sp.prune(build_model(st, seed), method, s,
                                         scoring_data(data[0], seed, st["batches"]), **options)
                    dens = {k: float(m.float().mean()) for k, m in masks.items()}
                    rows.append({"cell": cell, "label": label, "sparsity": s, "seed": seed,
                                 "densities": dens})
                    print(f"{cell} {label} {s:g} seed {seed}: "
                          + " ".join(f"{d:.3f}" for d in dens.values()), flush=True)
    lines = ["# per-layer mask densities (pruning at initialisation, no training)", "",
             f"CPU: {cpu_name()}. Density of each masked layer, in the model's order; 0.000: "
             "fewer than 0.05% of its weights kept; **0**: none (the layer collapsed).", ""]
    for cell in cells:
        mine = [r for r in rows if r["cell"] == cell]
        names = list(mine[0]["densities"])
        lines += [f"## {cell}", "", "layers: " + ", ".join(f"`{n}`" for n in names), "",
                  "| contender | sparsity | seed | densities |", "| --- | --- | --- | --- |"]
        for r in mine:
            lines.append(f"| {r['label']} | {r['sparsity']:.0%} | {r['seed']} | " + " ".join(
                "**0**" if d == 0 else f"{d:.3f}" for d in r["densities"].values()) + " |")
        lines.append("")
    _io.atomic_write_json(os.path.join(out, "layer_densities.json"), rows)
    _io.atomic_write_bytes(os.path.join(out, "layer_densities.md"), "\n".join(lines).encode())


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", nargs="+", default=list(CELLS), choices=list(CELLS))
    ap.add_argument("--seeds", nargs="+", type=int, default=None,
                    help="run only these of each cell's seeds (the others on a later call)")
    ap.add_argument("--contenders", nargs="+", default=None,
                    help="run only these of each cell's contenders (the others on a later call)")
    ap.add_argument("--sparsities", nargs="+", type=float, default=None,
                    help="run only these sparsities (the others on a later call)")
    ap.add_argument("--data-root", default=MNIST)
    ap.add_argument("--out", default=OUT)
    ap.add_argument("--summarize", action="store_true")
    ap.add_argument("--retime", action="store_true",
                    help="re-measure the step speed-up of every structured model run so far "
                         "(retimed.jsonl; run it alone on the machine), then summarize")
    ap.add_argument("--layer-densities", action="store_true",
                    help="only prune: each --contenders' per-layer densities in each --cells at "
                         "--sparsities for --seeds (layer_densities.md/.json), no training")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    os.makedirs(args.out, exist_ok=True)
    log = os.path.join(args.out, "runs.jsonl")
    if args.retime:
        retime(load_runs(log), os.path.abspath(args.data_root), args.out)
        args.summarize = True
    if args.layer_densities:
        labels = args.contenders or ["prospr_fo", "prospr_m1", "snip"]
        layer_densities(args.cells, labels, args.sparsities or SPARSITIES, args.seeds or [0],
                        os.path.abspath(args.data_root), args.out)
        return
    rows = load_runs(log)
    command = "python benchmarks/bench_defaults_grid.py " + " ".join(
        a if a != args.data_root else "<mnist>" for a in sys.argv[1:])
    if not args.summarize:
        from sparsepai.experiments.sweep import append_row

        done = {(r["cell"], r["label"], r["sparsity"], r["seed"]) for r in rows}
        data, size = None, None
        todo = [p for p in plan(args.cells) if p not in done
                and (args.seeds is None or p[3] in args.seeds)
                and (args.contenders is None or p[1] in args.contenders)
                and (args.sparsities is None or p[2] in args.sparsities)]
        for key in todo:
            cell, label, sparsity, seed = key
            st = settings(cell)
            if size != st["image_size"]:
                data, size = load_data(os.path.abspath(args.data_root), st["image_size"]), \
                    st["image_size"]
            if cell.startswith("structured"):
                res = run_structured(st, label, seed, data)
            else:
                res = run_unstructured(st, label, sparsity, seed, data)
            row = {"cell": cell, "label": label, "sparsity": sparsity, "seed": seed, **res,
                   "settings": st, "cpu": cpu_name(), "load": os.getloadavg()[0]}
            rows.append(row)
            append_row(log, row)
            print(f"{cell} {label} {sparsity:g} seed {seed}: {100 * res['test_acc']:.2f}%"
                  + (f" {res['speedup']:.2f}x" if "speedup" in res else ""), flush=True)
    report(rows, args.out, command)


if __name__ == "__main__":
    main()
