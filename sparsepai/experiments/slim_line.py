"""The demo's structured line: the dense model against a physically smaller one (structured
ProsPr channel masks, ``sp.slim``), trained the same way, accuracy and training seconds side by
side.

Each seed trains the dense model, then the slim one, back to back (same data order, epochs and
optimizer), so that the speedup is a same-seed ratio under the same machine load. Finished runs
are appended to ``structured.jsonl`` in the sweep's folder; a rerun skips them (the sweep's own
check guarantees the folder holds the same settings).
"""

from __future__ import annotations

import dataclasses
import os
import statistics

import torch

import sparsepai as sp
from sparsepai.experiments.data import load_dataset, loader
from sparsepai.experiments.models import get_model
from sparsepai.experiments.sweep import SweepConfig, append_row, load_rows
from sparsepai.experiments.train import train
from sparsepai.structured.prune import channel_defaults

LOG_FILE = "structured.jsonl"


@dataclasses.dataclass(frozen=True)
class SlimLine:
    """What the line compares. Args: method: the structured scoring method; sparsity: the
    fraction of prunable weights removed (``sp.prune(..., structured=True)``)."""

    method: str = "prospr"
    sparsity: float = 0.9


def run_slim_line(cfg: SweepConfig, out_dir: str, line: SlimLine = SlimLine(),
                  progress: bool = True) -> list:
    """Dense and slim runs for every seed of ``cfg`` (resuming from ``out_dir``).

    Args:
        cfg: the sweep's config (model, dataset, training, seeds, prune batch size).
        out_dir: the sweep's folder (exists).
        line: the method and sparsity of the slim model.
        progress: a progress bar per training.

    Returns:
        The rows of this line (old and new): ``{"kind": "dense" | "slim", "method",
        "sparsity", "seed", "test_acc", "train_seconds", "params"}``.
    """

    # the masks come from the method's structured defaults, which change with the measurements:
    # slim rows made with other defaults are another line (rows without the key predate it)
    options = channel_defaults(line.method)
    log = os.path.join(out_dir, LOG_FILE)
    rows = [r for r in load_rows(log)
            if r["method"] == line.method and r["sparsity"] == line.sparsity and (
                r["kind"] == "dense" or r.get("options") == options)]
    done = {(r["kind"], r["seed"]) for r in rows}
    data = None
    for seed in cfg.seeds:
        for kind in ("dense", "slim"):
            if (kind, seed) in done:
                continue
            if data is None:
                data = load_dataset(cfg.dataset, cfg.data_root, seed=0)
            train_set, test_set, info = data
            torch.manual_seed(seed)
            model = get_model(cfg.model, info.num_classes, info.in_channels, info.image_size)
            if kind == "slim":
                batches = loader(train_set, cfg.prune_batch_size, shuffle=True, seed=seed)
                masks = sp.prune(model, line.method, line.sparsity, batches, structured=True)
                model = sp.slim(model, masks)
            res = train(model, None, train_set, test_set,
                        dataclasses.replace(cfg.train, seed=seed), progress=progress)
            row = {"kind": kind, "method": line.method, "sparsity": line.sparsity,
                   "seed": seed, **({"options": options} if kind == "slim" else {}),
                   "test_acc": res["test_acc"],
                   "train_seconds": res["train_seconds"][-1],
                   "params": sum(p.numel() for p in model.parameters())}
            append_row(log, row)
            rows.append(row)
    return rows


def summarize_line(rows) -> dict | None:
    """``{"dense": stats, "slim": stats, "speedup", "seeds", "method", "sparsity"}`` with
    stats ``{"acc", "acc_std", "seconds", "params"}`` (means over seeds), the speedup the mean
    of the same-seed ratios dense seconds / slim seconds; None without a seed that has both."""
    by = {(r["kind"], r["seed"]): r for r in rows}
    seeds = sorted(s for k, s in by if k == "dense" and ("slim", s) in by)
    if not seeds:
        return None
    out = {"seeds": seeds, "method": rows[0]["method"], "sparsity": rows[0]["sparsity"],
           "speedup": statistics.mean(by[("dense", s)]["train_seconds"] /
                                      by[("slim", s)]["train_seconds"] for s in seeds)}
    for kind in ("dense", "slim"):
        rs = [by[(kind, s)] for s in seeds]
        acc = [r["test_acc"] for r in rs]
        out[kind] = {"acc": statistics.mean(acc), "acc_std": statistics.pstdev(acc),
                     "seconds": statistics.mean(r["train_seconds"] for r in rs),
                     "params": rs[0]["params"]}
    return out
