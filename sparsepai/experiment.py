"""Sweeps: every method at several sparsities and seeds, pruned, trained, evaluated; results
written as each run finishes (a killed sweep resumes where it stopped), then a table, CSV/JSON
and a plot of accuracy against sparsity (one line per method, like Figure 2 of the ProsPr
paper)."""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import time

import torch
from tqdm.auto import tqdm

from sparsepai.train import TrainConfig

ALL_METHODS = ("random", "magnitude", "snip", "grasp", "synflow", "force", "prospr")
# baselines that train first: one train-prune-rewind run per seed serves every sparsity
AFTER_TRAINING = ("lottery", "magnitude_after_training")


@dataclasses.dataclass(frozen=True)
class SweepConfig:
    """A sweep's whole configuration (written beside its results).

    ``methods`` are labels: a method name, or a label defined in ``method_options`` as
    ``(label, method, {option: value})`` (e.g. ``("lottery_k25", "lottery",
    {"rewind_iteration": 25})``), so one method can appear with several settings.
    """

    model: str = "smallconv"
    dataset: str = "digits"
    data_root: str | None = None
    methods: tuple = ALL_METHODS
    sparsities: tuple = (0.9, 0.95, 0.98, 0.99)
    seeds: tuple = (0, 1)
    prune_batch_size: int = 128
    dense_baseline: bool = True
    train: TrainConfig = TrainConfig(epochs=15, batch_size=64, lr=0.05)
    method_options: tuple = ()


def resolve(cfg: SweepConfig, label: str) -> tuple:
    """``(method name, options)`` of a label of ``cfg.methods``."""
    for lab, method, options in cfg.method_options:
        if lab == label:
            return method, dict(options)
    return label, {}


def _append(path, row):
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")
        f.flush()
        os.fsync(f.fileno())


def load_rows(path):
    """The result rows of a runs.jsonl (a line cut by a crash is skipped)."""
    if not os.path.exists(path):
        return []
    rows = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:  # a line cut by a crash: that run reruns
                    pass
    return rows


def run_one(cfg: SweepConfig, label: str, sparsity: float, seed: int, data, progress=False,
            tickets: dict | None = None):
    """Prune (``label`` at ``sparsity``), train and evaluate one model.

    Args:
        cfg, data: the sweep's config and ``(train, test, info)``.
        label: a method label (see :class:`SweepConfig`), or ``"dense"``.
        tickets: a cache ``{(label, seed): (Tickets, seconds)}`` for the after-training methods:
            their one run per seed (at every ``cfg.sparsities``) is made once and reused.

    Returns:
        The result row. For after-training methods the model trains from the ticket's rewind
        weights and ``prune_seconds`` is the whole shared run.
    """
    import sparsepai as sp
    from sparsepai.data import loader
    from sparsepai.models import get_model
    from sparsepai.train import train

    train_set, test_set, info = data
    method, options = resolve(cfg, label)
    torch.manual_seed(seed)
    model = get_model(cfg.model, info.num_classes, info.in_channels, info.image_size)
    t0 = time.perf_counter()
    masks, extra = None, {}
    batches = loader(train_set, cfg.prune_batch_size, shuffle=True, seed=seed)
    if method in AFTER_TRAINING:
        tickets = {} if tickets is None else tickets
        if (label, seed) not in tickets:
            # every sparsity of the sweep, so a resumed sweep takes the same lottery path
            found = sp.pruning.prune_after_training(model, method, cfg.sparsities, batches,
                                                    **options)
            tickets[(label, seed)] = (found, time.perf_counter() - t0)
        found, prune_s = tickets[(label, seed)]
        model.load_state_dict(found.state)
        masks = found.masks[sparsity]
        extra = {"rounds": found.rounds}
    else:
        if method != "dense":
            masks = sp.prune(model, method, sparsity, batches, **options)
        prune_s = time.perf_counter() - t0
    result = train(model, masks, train_set, test_set,
                   dataclasses.replace(cfg.train, seed=seed), progress=progress)
    kept = sum(int(m.sum()) for m in masks.values()) if masks else None
    total = sum(int(m.numel()) for m in masks.values()) if masks else None
    return {"method": label, "sparsity": sparsity, "seed": seed, "test_acc": result["test_acc"],
            "prune_seconds": prune_s, "kept": kept, "prunable": total,
            "train_loss": result["train_loss"][-1] if result["train_loss"] else None, **extra}


def run_sweep(cfg: SweepConfig, out_dir: str, progress: bool = True,
              command: str | None = None) -> list:
    """Run (or resume) a sweep into ``out_dir``; returns all result rows. ``command`` (the
    command line that ran it) is recorded in results.json."""
    from sparsepai.data import load_dataset

    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(dataclasses.asdict(cfg), f, indent=1)
    log = os.path.join(out_dir, "runs.jsonl")
    rows = load_rows(log)
    done = {(r["method"], r["sparsity"], r["seed"]) for r in rows}
    plan = [("dense", 0.0, s) for s in cfg.seeds] if cfg.dense_baseline else []
    plan += [(m, sp_, s) for s in cfg.seeds for sp_ in cfg.sparsities for m in cfg.methods]
    todo = [p for p in plan if p not in done]
    data = load_dataset(cfg.dataset, cfg.data_root, seed=0)
    bar = tqdm(todo, desc=f"{cfg.model}/{cfg.dataset} sweep", disable=not progress)
    tickets = {}
    for method, sparsity, seed in bar:
        bar.set_postfix_str(f"{method} {sparsity:.3g} seed {seed}")
        row = run_one(cfg, method, sparsity, seed, data, tickets=tickets)
        rows.append(row)
        _append(log, row)
    write_summary(rows, cfg, out_dir, command)
    return rows


def summarize(rows):
    """{(method, sparsity): (mean acc, std acc, n)}."""
    groups = {}
    for r in rows:
        groups.setdefault((r["method"], r["sparsity"]), []).append(r["test_acc"])
    return {k: (statistics.mean(v), statistics.pstdev(v) if len(v) > 1 else 0.0, len(v))
            for k, v in groups.items()}


def table(rows, cfg: SweepConfig) -> str:
    s = summarize(rows)
    w = max([11] + [len(m) + 1 for m in cfg.methods])
    head = f"{'method':<{w}}" + "".join(f"{100 * x:>14.1f}%" for x in cfg.sparsities)
    lines = [f"test accuracy (%), mean +- std over seeds {list(cfg.seeds)}; columns: sparsity",
             head]
    if ("dense", 0.0) in s:
        m, sd, _ = s[("dense", 0.0)]
        lines.append(f"{'dense':<{w}}" + f"{100 * m:>9.2f} +- {100 * sd:.2f}  (no pruning)")
    for method in cfg.methods:
        cells = []
        for x in cfg.sparsities:
            v = s.get((method, x))
            cells.append(f"{100 * v[0]:>9.2f} +-{100 * v[1]:>4.1f}" if v else f"{'-':>15}")
        lines.append(f"{method:<{w}}" + "".join(cells))
    short = sorted({f"{k[0]} ({v[2]} of {len(cfg.seeds)})" for k, v in s.items()
                    if (k[0] in cfg.methods or k[0] == "dense") and v[2] < len(cfg.seeds)})
    if short:
        lines.append("fewer runs than seeds (runs of seeds): " + ", ".join(short))
    return "\n".join(lines)


def write_summary(rows, cfg: SweepConfig, out_dir: str, command: str | None = None):
    import csv

    with open(os.path.join(out_dir, "results.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["method", "sparsity", "seed", "test_acc",
                                          "prune_seconds", "kept", "prunable", "train_loss",
                                          "rounds"])
        w.writeheader()
        w.writerows(rows)
    s = summarize(rows)
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump({"command": command, "config": dataclasses.asdict(cfg),
                   "summary": [{"method": k[0], "sparsity": k[1], "mean_acc": v[0],
                                "std_acc": v[1], "runs": v[2]} for k, v in sorted(s.items())],
                   "runs": rows}, f, indent=1)
    with open(os.path.join(out_dir, "table.txt"), "w") as f:
        f.write(table(rows, cfg) + "\n")
    plot(rows, cfg, os.path.join(out_dir, "accuracy_vs_sparsity.png"))


def plot(rows, cfg: SweepConfig, path: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = summarize(rows)
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    xs = [100 * (1 - x) for x in cfg.sparsities]  # percent of weights remaining
    for method in cfg.methods:
        pts = [(x, s[(method, sp_)]) for x, sp_ in zip(xs, cfg.sparsities) if (method, sp_) in s]
        if pts:
            ax.errorbar([p[0] for p in pts], [100 * p[1][0] for p in pts],
                        yerr=[100 * p[1][1] for p in pts], marker="o", capsize=3, label=method)
    if ("dense", 0.0) in s:
        ax.axhline(100 * s[("dense", 0.0)][0], color="k", ls="--", lw=1, label="dense")
    ax.set_xscale("log")
    ax.invert_xaxis()
    ax.set_xticks(xs)
    ax.set_xticklabels([f"{x:g}%" for x in xs])
    ax.set(xlabel="weights remaining", ylabel="test accuracy (%)",
           title=f"{cfg.model} on {cfg.dataset}: pruning at initialization")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
