"""The sanity-check table: every method against its shuffled, re-initialised and inverted masks
(Frankle et al., ICLR 2021), from sweeps run with ``sparsepai sweep --ablations
shuffle,reinit,invert`` (one folder per model under ``benchmarks/results/sanity_checks``).

    python benchmarks/sanity_summary.py  # -> benchmarks/results/sanity_checks/table.md, sanity.png

For each model, method and sparsity: the plain masks' mean accuracy over seeds and each
ablation's difference to it (points). A method whose masks carry information beyond its
per-layer densities loses accuracy when shuffled; one whose weights matter, when re-initialised;
inverted masks (the lowest scores kept) should lose most.
"""

from __future__ import annotations

import json
import os
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

from machine import cpu_name  # noqa: E402
from sparsepai import _io  # noqa: E402
from sparsepai.experiments.sweep import load_rows, split_ablation  # noqa: E402

OUT = os.path.join(HERE, "results", "sanity_checks")
ABLATIONS = ("shuffle", "reinit", "invert")


def collect(out: str) -> dict:
    """{model folder: (config, {(method, ablation or None, sparsity): [acc]})}."""
    found = {}
    for name in sorted(os.listdir(out)):
        folder = os.path.join(out, name)
        if not os.path.isfile(os.path.join(folder, "config.json")):
            continue
        with open(os.path.join(folder, "config.json")) as f:
            cfg = json.load(f)
        acc = {}
        for r in load_rows(os.path.join(folder, "runs.jsonl")):
            base, ablation = split_ablation(r["method"])
            acc.setdefault((base, ablation, r["sparsity"]), []).append(r["test_acc"])
        found[name] = (cfg, acc)
    return found


def table(found) -> str:
    lines = []
    for name, (cfg, acc) in found.items():
        t = cfg["train"]
        dense = acc.get(("dense", None, 0.0))
        lines += ["", f"### {cfg['model']} on {cfg['dataset']}", "",
                  f"{t['epochs']} epochs, {t['optimizer']} lr {t['lr']}, batch {t['batch_size']}"
                  f"{', cosine' if t.get('cosine', True) else ''}; seeds {cfg['seeds']}; dense "
                  + (f"{100 * statistics.mean(dense):.2f}%" if dense else "not run")
                  + ". Cells: plain masks' mean accuracy % (min over seeds), and each "
                    "ablation's mean minus the plain mean, points.", "",
                  "| method | sparsity | plain | shuffled | re-initialised | inverted |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for method in cfg["methods"]:
            for s in cfg["sparsities"]:
                plain = acc.get((method, None, s))
                if not plain:
                    continue
                m = statistics.mean(plain)
                cells = []
                for a in ABLATIONS:
                    v = acc.get((method, a, s))
                    cells.append(f"{100 * (statistics.mean(v) - m):+.1f} (n={len(v)})" if v
                                 else "-")
                lines.append(f"| {method} | {100 * s:g}% | {100 * m:.1f} ({100 * min(plain):.1f},"
                             f" n={len(plain)}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(found, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(found)
    if not models:
        return
    methods = sorted({m for cfg, _ in found.values() for m in cfg["methods"]})
    fig, axes = plt.subplots(len(models), len(methods), figsize=(3.2 * len(methods),
                                                                  2.9 * len(models)),
                             squeeze=False, sharey="row")
    styles = {None: ("k", "o", "plain"), "shuffle": ("C0", "s", "shuffled"),
              "reinit": ("C2", "^", "re-initialised"), "invert": ("C3", "v", "inverted")}
    for i, name in enumerate(models):
        cfg, acc = found[name]
        for j, method in enumerate(methods):
            ax = axes[i][j]
            for a, (color, marker, label) in styles.items():
                pts = [(s, acc[(method, a, s)]) for s in cfg["sparsities"]
                       if (method, a, s) in acc]
                if not pts:
                    continue
                xs = [100 * s for s, _ in pts]
                ax.plot(xs, [100 * statistics.mean(v) for _, v in pts], color=color,
                        marker=marker, label=label, lw=2 if a is None else 1)
                for x, (_, v) in zip(xs, pts):
                    ax.scatter([x] * len(v), [100 * y for y in v], color=color, s=6, alpha=0.4)
            if method not in cfg["methods"]:
                ax.text(0.5, 0.5, "not run", ha="center", va="center", transform=ax.transAxes)
            ax.set_title(f"{cfg['model']}: {method}", fontsize=9)
            ax.set_xticks([100 * s for s in cfg["sparsities"]])
            ax.grid(True, alpha=0.3)
            if i == len(models) - 1:
                ax.set_xlabel("sparsity %")
            if j == 0:
                ax.set_ylabel("test accuracy %")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    _io.save_figure(path, fig, dpi=100)
    plt.close(fig)


def main():
    found = collect(OUT)
    cmds = []
    for name, (cfg, _) in found.items():
        res = os.path.join(OUT, name, "results.json")
        if os.path.exists(res):
            with open(res) as f:
                cmds.append(json.load(f).get("command") or "")
    head = ["# sanity checks: masks against their shuffled, re-initialised and inverted variants",
            "", f"CPU: {cpu_name()} (one thread per run, a shared machine).", "",
            "Commands:", ""] + [f"    {c}" for c in cmds if c] + [
            "    python benchmarks/sanity_summary.py"]
    _io.atomic_write_bytes(os.path.join(OUT, "table.md"),
                           ("\n".join(head) + "\n" + table(found) + "\n").encode())
    plot(found, os.path.join(OUT, "sanity.png"))
    print(table(found))


if __name__ == "__main__":
    main()
