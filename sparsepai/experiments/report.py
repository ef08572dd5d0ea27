"""A sweep's report: the accuracy table, CSV/JSON of every run and a plot of accuracy against
sparsity (one line per method, like Figure 2 of the ProsPr paper)."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import statistics
from sparsepai import _io
from sparsepai.masks.ablate import ABLATIONS

CSV_FIELDS = ("method", "sparsity", "seed", "test_acc", "prune_seconds", "kept", "prunable",
              "train_loss", "rounds", "ablation")


AFTER_TRAINING = ("lottery", "magnitude_after_training")


def resolve(cfg, label: str) -> tuple:
    """``(method name, options)`` of a label of ``cfg.methods``."""
    for lab, method, options in cfg.method_options:
        if lab == label:
            return method, dict(options)
    return label, {}


def labels(cfg) -> list:
    """``(label, method, options)`` of every entry of ``cfg.methods``."""
    return [(label, *resolve(cfg, label)) for label in cfg.methods]


def row_labels(cfg) -> list:
    """The labels of the sweep's rows in report order: each method, then its ablated variants
    (``"<label>+<ablation>"``; after-training methods have none)."""
    out = []
    for label, method, _ in labels(cfg):
        out.append(label)
        if method not in AFTER_TRAINING:
            out += [f"{label}+{a}" for a in cfg.ablations]
    return out


def split_ablation(label: str) -> tuple:
    """``(method label, ablation or None)`` of a row label."""
    base, plus, a = label.rpartition("+")
    return (base, a) if plus and a in ABLATIONS else (label, None)


def summarize(rows):
    """{(method, sparsity): (mean acc, std acc, n)}."""
    groups = {}
    for r in rows:
        groups.setdefault((r["method"], r["sparsity"]), []).append(r["test_acc"])
    return {k: (statistics.mean(v), statistics.pstdev(v) if len(v) > 1 else 0.0, len(v))
            for k, v in groups.items()}


def table(rows, cfg) -> str:
    s = summarize(rows)
    methods = row_labels(cfg)
    w = max([11] + [len(m) + 1 for m in methods])
    head = f"{'method':<{w}}" + "".join(f"{100 * x:>14.1f}%" for x in cfg.sparsities)
    lines = [f"test accuracy (%), mean +- std over seeds {list(cfg.seeds)}; columns: sparsity",
             head]
    if ("dense", 0.0) in s:
        m, sd, _ = s[("dense", 0.0)]
        lines.append(f"{'dense':<{w}}" + f"{100 * m:>9.2f} +- {100 * sd:.2f}  (no pruning)")
    for method in methods:
        cells = []
        for x in cfg.sparsities:
            v = s.get((method, x))
            cells.append(f"{100 * v[0]:>9.2f} +-{100 * v[1]:>4.1f}" if v else f"{'-':>15}")
        lines.append(f"{method:<{w}}" + "".join(cells))
    short = sorted({f"{k[0]} ({v[2]} of {len(cfg.seeds)})" for k, v in s.items()
                    if (k[0] in methods or k[0] == "dense") and v[2] < len(cfg.seeds)})
    if short:
        lines.append("fewer runs than seeds (runs of seeds): " + ", ".join(short))
    return "\n".join(lines)


def write_summary(rows, cfg, out_dir: str, command: str | None = None,
                  structured: dict | None = None):
    """Write ``results.csv``, ``results.json``, ``table.txt`` and ``accuracy_vs_sparsity.png``
    into ``out_dir`` (each atomically).

    Args:
        rows: the result rows of every run.
        cfg: the sweep's config.
        out_dir: an existing folder.
        command: the command line, recorded in results.json.
        structured: the demo's structured line (``slim_line.summarize_line``, printed by
            :func:`line_text`): added to results.json, the table and, as a second panel, the
            plot.
    """
    text = io.StringIO(newline="")
    w = csv.DictWriter(text, fieldnames=list(CSV_FIELDS))
    w.writeheader()
    w.writerows(rows)
    _io.atomic_write_bytes(os.path.join(out_dir, "results.csv"), text.getvalue().encode())
    s = summarize(rows)
    _io.atomic_write_bytes(os.path.join(out_dir, "results.json"), json.dumps({
        "command": command, "config": dataclasses.asdict(cfg),
        "summary": [{"method": k[0], "sparsity": k[1], "mean_acc": v[0], "std_acc": v[1],
                     "runs": v[2]} for k, v in sorted(s.items())],
        "runs": rows, "structured": structured}, indent=1).encode())
    text = table(rows, cfg)
    if structured:
        text += "\n\n" + line_text(structured)
    _io.atomic_write_bytes(os.path.join(out_dir, "table.txt"), (text + "\n").encode())
    plot(rows, cfg, os.path.join(out_dir, "accuracy_vs_sparsity.png"), structured)


def line_text(s: dict) -> str:
    """The printed line: dense against slim, accuracy and training seconds side by side."""
    d, m = s["dense"], s["slim"]
    return (f"structured, {100 * s['sparsity']:g}% of weights removed ({s['method']} channels, "
            f"sp.slim), seeds {s['seeds']}:\n"
            f"  {'dense':<6}{100 * d['acc']:6.2f} +- {100 * d['acc_std']:.2f} %  "
            f"{d['seconds']:7.1f} s training  {d['params']:>9,} weights\n"
            f"  {'slim':<6}{100 * m['acc']:6.2f} +- {100 * m['acc_std']:.2f} %  "
            f"{m['seconds']:7.1f} s training  {m['params']:>9,} weights  "
            f"({s['speedup']:.2f}x faster, {100 * (m['acc'] - d['acc']):+.2f} points)")


def plot(rows, cfg, path: str, structured: dict | None = None):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = summarize(rows)
    if structured:
        fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.5),
                                      gridspec_kw={"width_ratios": [3, 2]})
        _plot_line(ax2, structured)
    else:
        fig, ax = plt.subplots(figsize=(6.5, 4.5))
    xs = [100 * (1 - x) for x in cfg.sparsities]  # percent of weights remaining
    color, styles = {}, {None: ("-", "o"), "shuffle": (":", "s"), "reinit": ("--", "^"),
                         "invert": ("-.", "v")}
    for method in row_labels(cfg):
        base, ablation = split_ablation(method)
        pts = [(x, s[(method, sp_)]) for x, sp_ in zip(xs, cfg.sparsities) if (method, sp_) in s]
        if pts:  # an ablated variant: its method's colour, its own line style
            ls, marker = styles[ablation]
            bar = ax.errorbar([p[0] for p in pts], [100 * p[1][0] for p in pts],
                              yerr=[100 * p[1][1] for p in pts], marker=marker, capsize=3,
                              label=method, ls=ls, color=color.get(base),
                              lw=1 if ablation else 1.5)
            color.setdefault(base, bar.lines[0].get_color())
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
    _io.save_figure(path, fig, dpi=120)
    plt.close(fig)


def _plot_line(ax, s: dict):
    """Dense and slim as bars of training seconds, their accuracy written on them."""
    kinds = ("dense", "slim")
    secs = [s[k]["seconds"] for k in kinds]
    bars = ax.bar([f"dense\n{s['dense']['params']:,} weights",
                   f"slim, {100 * s['sparsity']:g}% structured\n{s['slim']['params']:,} weights"],
                  secs, color=["0.55", "C2"])
    for b, k in zip(bars, kinds):
        ax.text(b.get_x() + b.get_width() / 2, b.get_height(),
                f"{100 * s[k]['acc']:.1f} +- {100 * s[k]['acc_std']:.1f}%", ha="center",
                va="bottom", fontsize=10, fontweight="bold")
    ax.set_ylim(0, 1.2 * max(secs))
    ax.set_ylabel("training seconds (mean over seeds)")
    ax.set_title(f"{s['method']} channels + sp.slim: {s['speedup']:.1f}x faster, "
                 f"{100 * (s['slim']['acc'] - s['dense']['acc']):+.1f} points", fontsize=10)
    ax.grid(True, axis="y", alpha=0.3)
