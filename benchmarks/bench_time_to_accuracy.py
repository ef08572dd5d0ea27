"""Structured pruning at initialization: test accuracy against wall-clock training seconds.

Data: the MNIST split (../shared/data/mnist: first 8,000 images train, last 2,000 evaluate),
zero-padded to 32x32, 1 channel. Models: the CIFAR-style ``resnet20``, ``resnet18`` and
``vgg19`` of ``sparsepai.experiments.models`` (10 classes). Contenders, per model:
  - ``dense``: the unpruned model;
  - ``{prospr,3sp,magnitude,random}@S`` and ``...+cost@S``: ``sp.prune(model, method, S, data,
    structured=True)`` plain and compute-weighted (``cost_weighting=True``; ``+cost0.5`` is
    ``cost_weighting=0.5``; a ``+minK`` suffix adds ``min_per_layer=K``, a floor of K channels
    per layer), then ``sp.slim``; 3SP is the method ``snip``;
    ``random`` draws its scores from a generator seeded with the run's seed (a new mask per seed);
  - ``default@S``: ``sp.prune(model, "prospr", S, data, structured=True)`` with the library's
    defaults, whatever they are when the benchmark runs (the options used are recorded);
  - ``unstructured@S`` and ``unstructured+kernels@S`` (not in the default ``--variants``):
    ``sp.prune(model, "prospr", S, data)`` with the library's defaults (unstructured masks,
    non-uniform per-layer densities), trained as a masked dense model, and trained on the
    unstructured-sparse kernels (``sp.sparsify`` measured on the first batch, as
    ``sparsepai train --sparse-kernels`` does: each layer runs on the kernels only where they
    measure faster); the sparsify measurements are recorded apart (``sparsify s``), as the
    pruning time is.
Every contender trains with the one training loop (``sparsepai.experiments.train.train``: SGD with
momentum 0.9, weight decay 5e-4, cosine decay, the same batch size, epochs and data order
for a seed; pruning scores on 4 batches of 128); the test accuracy and the cumulative training
seconds (evaluation excluded) are recorded after every epoch, with every step's time; the
table and plot count a run's training seconds as its median step time times its steps (robust
to the bursts of load of a shared machine; the raw wall-clock is in the table too). Runs are
interleaved: seed by seed, and for a model and seed every contender trains in lockstep (epoch e
of each, in alternating order, before epoch e + 1 of any), so that changes of machine load hit
all of them; speedups are same-seed ratios.

Outputs in ``--out`` (default benchmarks/results/time_to_accuracy): ``runs.jsonl`` (one line per
finished run; rerunning the same command resumes, a folder of other settings is refused),
``config.json``, ``table.md`` (time to reach the dense accuracy minus 1 point, final accuracy,
speedup) and ``time_to_accuracy.png`` (one line per contender, the Pareto frontier marked).

    python benchmarks/bench_time_to_accuracy.py                    # everything (many hours)
    python benchmarks/bench_time_to_accuracy.py --summarize        # table and plot only
    # unstructured ProsPr on the sparse kernels against dense and the structured default
    python benchmarks/bench_time_to_accuracy.py --models resnet18 --seeds 0 --sparsities 0.95 \
        --variants dense,default,unstructured,unstructured+kernels --epochs 3 \
        --train-images 4096 --batch 64 --threads 2 --out benchmarks/results/time_to_accuracy_sparse
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
from sparsepai import _io  # noqa: E402  (cheap: the package imports torch lazily)
from machine import cpu_name  # noqa: E402
from tta_summary import (METHODS, known_widths, load_runs, order,  # noqa: E402
                         side_by_side, summarize)

OUT = os.path.join(HERE, "results", "time_to_accuracy")
MNIST = os.path.join(os.path.dirname(os.path.dirname(HERE)), "shared", "data", "mnist")
# every contender a plain run produces, before the sparsity suffix
ALL_VARIANTS = ("dense", "default") + tuple(f"{m}{w}" for m in METHODS for w in ("", "+cost"))
# unstructured ProsPr (library defaults) contenders -> whether they train on the sparse kernels
UNSTRUCTURED = {"unstructured": False, "unstructured+kernels": True}


def parse_variant(label: str):
    """``(method, options, sparsity)`` of a contender label (``dense`` -> ``(None, {}, 0.0)``);
    a plain label says ``cost_weighting=False`` (ProsPr's default weighting is on)."""
    if label == "dense":
        return None, {}, 0.0
    name, _, s = label.partition("@")
    sparsity = float(s)
    if name in UNSTRUCTURED:
        return "prospr", {}, sparsity
    name, floored, floor = name.partition("+min")
    extra = {"min_per_layer": int(floor)} if floored else {}
    if name == "default":
        return "prospr", extra, sparsity
    base, weighted, cost = name.partition("+cost")
    if base not in METHODS:
        raise ValueError(f"bench_time_to_accuracy: unknown contender {label!r}")
    options = {"cost_weighting": (float(cost) if cost else True) if weighted else False}
    return METHODS[base], {**options, **extra}, sparsity


def contenders(variants, sparsities):
    out = []
    for v in variants:
        if v == "dense":
            out.append(v)
        else:
            out.extend(f"{v}@{s:g}" for s in sparsities)
    for label in out:
        parse_variant(label)  # fail before any work
    return out


def mnist32(root: str, train_images: int, test_images: int):
    import torch
    import torch.nn.functional as F

    from sparsepai.experiments.data import load_dataset

    train, test, _ = load_dataset("mnist", root)

    def convert(ds, n):
        xs = torch.stack([ds[i][0] for i in range(n)])
        ys = torch.tensor([int(ds[i][1]) for i in range(n)])
        return torch.utils.data.TensorDataset(F.pad(xs, (2, 2, 2, 2)), ys)

    return convert(train, min(train_images, len(train))), convert(test, min(test_images,
                                                                            len(test)))


def flops(model, x) -> int:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    was = model.training
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model(x)
    model.train(was)
    return fc.get_total_flops()


def widths(model) -> list:
    """Channels each convolution keeps: where a mask thins the network down to a bottleneck."""
    import torch

    return [m.out_channels for m in model.modules() if isinstance(m, torch.nn.Conv2d)]


def backfill_widths(out, runs, train_set, settings, wanted) -> None:
    """Rebuild (prune and slim, no training) the runs of ``out`` that ``wanted(run)`` selects and
    that predate the widths record, check each against its run's parameter count, and keep
    their widths in ``out/widths.json`` (written after each, so an interrupted backfill keeps
    what it did)."""
    path, known = os.path.join(out, "widths.json"), known_widths(out)
    for r in runs:
        key = f"{r['model']}/{r['variant']}/{r['seed']}"
        if r.get("widths") or key in known or not wanted(r):
            continue
        model, row = build(r["model"], r["variant"], r["seed"], train_set, settings)
        if row["params"] != r["params"]:
            raise SystemExit(f"bench_time_to_accuracy --widths: {key} rebuilt with "
                             f"{row['params']:,} parameters, the run had {r['params']:,}")
        # re-read: another backfill may have added to the file meanwhile
        _io.atomic_write_json(path, {**known_widths(out), key: row["widths"]})
        print(f"{key}: {row['widths']}", flush=True)


def dense_model(name):
    """The unpruned ``name`` for the MNIST split (10 classes, 1 channel, 32x32)."""
    from sparsepai.experiments.models import get_model

    return get_model(name, num_classes=10, in_channels=1, image_size=32)


def build(name, label, seed, train_set, settings):
    """The contender's model, ready to train (pruned and slimmed), and its row so far."""
    import torch

    import sparsepai as sp
    from sparsepai.experiments.data import loader

    method, options, sparsity = parse_variant(label)
    if method == "random":  # its scores have their own generator: a new mask per seed
        options = {"seed": seed, **options}
    unstructured = label.partition("@")[0] in UNSTRUCTURED
    torch.manual_seed(seed)
    dense = dense_model(name)
    x1 = train_set[:1][0]
    prune_s, pruned, fl = 0.0, 0, None
    if method is None:
        model = dense
    else:
        data = list(loader(train_set, settings["prune_batch"], shuffle=True, seed=1000 + seed))
        t0 = time.perf_counter()
        masks = sp.prune(dense, method, sparsity, data[:settings["prune_batches"]],
                         structured=not unstructured, **options)
        # unstructured: the masks ride on the model (sp.apply_masks records them), for training
        model = sp.apply_masks(dense, masks) if unstructured else sp.slim(dense, masks)
        prune_s = time.perf_counter() - t0
        if unstructured:  # the weights and FLOPs the masks keep
            from bench_sparse_train import masked_flops

            pruned = sum(int((~m).sum()) for m in masks.values())
            all_cl, kept_cl = masked_flops(model, masks, x1)
            fl = round(flops(model, x1) - all_cl + kept_cl)
    if fl is None:
        fl = flops(model, x1)
    row = {"model": name, "variant": label, "seed": seed, "method": method,
           "options": dict(options), "sparsity": sparsity,
           "structured": method is not None and not unstructured,
           "sparse_kernels": UNSTRUCTURED.get(label.partition("@")[0], False),
           "params": sum(p.numel() for p in model.parameters()) - pruned,
           "flops": fl, "prune_seconds": prune_s,
           "widths": widths(model),
           "test_acc": [], "train_seconds": [], "train_loss": [], "load": [],
           "step_seconds": []}
    if settings["channels_last"]:
        model = model.to(memory_format=torch.channels_last)
    return model, row


def run_lockstep(name, labels, seed, train_set, test_set, settings, log):
    """Train every contender of ``labels`` for one model and seed in lockstep: epoch e of each
    (in alternating order) before epoch e + 1 of any, so that a change of machine load between
    epochs hits all of them. Unstructured contenders train with their masks (the pruned weights
    held at zero), ``unstructured+kernels`` with ``sp.sparsify`` (``TrainConfig.sparse_kernels``).
    Returns their rows."""
    import dataclasses

    from sparsepai.experiments.train import TrainConfig, train_epochs

    cfg = TrainConfig(epochs=settings["epochs"], batch_size=settings["batch"], lr=settings["lr"],
                      momentum=0.9, weight_decay=5e-4, cosine=True, seed=seed)
    built = [build(name, label, seed, train_set, settings) for label in labels]
    runs = [(train_epochs(m, getattr(m, "sparsepai_masks", None), train_set, test_set,
                          dataclasses.replace(cfg, sparse_kernels=row["sparse_kernels"])), row, m)
            for m, row in built]
    for epoch in range(cfg.epochs):
        order = runs if epoch % 2 == 0 else runs[::-1]
        for gen, row, model in order:
            e = next(gen)
            for k in ("test_acc", "train_seconds", "train_loss"):
                row[k].append(e[k])
            row["step_seconds"] += e["step_seconds"]
            row["load"].append(os.getloadavg()[0])
            if epoch == 0 and row["sparse_kernels"]:  # what sp.sparsify did, and its cost
                report = model.sparsepai_sparsify_report
                row["sparsify_seconds"] = e["setup_seconds"]
                row["sparse_layers"] = [r.name for r in report if r.swapped]
                row["sparsify_report"] = [dataclasses.asdict(r) for r in report]
        log(f"  {name} seed {seed} epoch {epoch + 1}/{cfg.epochs}: " + ", ".join(
            f"{row['variant']} {100 * row['test_acc'][-1]:.1f}% {row['train_seconds'][-1]:.0f}s"
            for _, row, _ in runs))
    return [row for _, row, _ in runs]


def table(summary: dict) -> str:
    lines = []
    for name, s in summary.items():
        d = s["rows"].get("dense")
        target = f"{100 * s['target']:.2f}%" if s["target"] is not None else "n/a (no dense run)"
        timing = ("quiet step times (bench_step_time.py, 1 thread)" if s["quiet"] else
                  "the runs' own median step times")
        lines += [f"\n**{name}**: target = dense accuracy - 1 point = {target}; train s = "
                  f"steps x {timing}\n",
                  "| contender | seeds | final acc (%) | train s | s / epoch | speedup vs dense | "
                  "time to target (s) | in-run s | wall s | params | FLOPs / dense | prune s | "
                  "sparsify s |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for label, r in sorted(s["rows"].items(), key=lambda kv: order(kv[0])):
            reach = (f"{r['to_target']:.0f} ({r['reached']}/{len(r['seeds'])})"
                     if r["reached"] else f"not reached (0/{len(r['seeds'])})")
            fl = f"{r['flops'] / d['flops']:.3f}" if d else "-"
            sp_ = f"{r['speedup']:.2f}x" if r["speedup"] else "-"
            sps = "-" if r["sparsify_seconds"] is None else f"{r['sparsify_seconds']:.1f}"
            lines.append(f"| {label} | {len(r['seeds'])} | {100 * r['acc']:.2f} +- "
                         f"{100 * r['acc_std']:.2f} | {r['seconds']:.1f} | "
                         f"{r['seconds'] / r['epochs']:.1f} | {sp_} | {reach} | "
                         f"{r['loaded']:.0f} | {r['wall']:.0f} | {r['params']:,} | {fl} | "
                         f"{r['prune_seconds']:.1f} | {sps} |")
    return "\n".join(lines)


def protocol(runs, settings) -> str:
    """How the runs of a folder were made, for its table: data, training, timing, and the
    machines, threads, load and commands the runs recorded (runs older than that record name
    none)."""
    text = (f"Protocol: the MNIST split (of the 10,000 images, the first "
            f"{settings['train_images']:,} of the first 8,000 train and the first "
            f"{settings['test_images']:,} of the last 2,000 evaluate), zero-padded to 32x32; "
            f"{settings['epochs']} epochs of SGD (momentum 0.9, weight decay 5e-4, lr "
            f"{settings['lr']} with cosine decay, batch {settings['batch']}) in the library's "
            "training loop; pruning scores on "
            f"{settings['prune_batches']} batches of {settings['prune_batch']}; contenders of a "
            "model and seed train in lockstep, epoch by epoch; train s = a median step time x the "
            "run's steps (each table says whose: the run's own, or bench_step_time.py's quiet "
            "ones; wall s: the raw training wall-clock; evaluation, pruning and "
            "sp.sparsify's measurements excluded, given apart); target = dense accuracy - 1 "
            "point, time to target = the training seconds at the end of the first epoch that "
            "reaches it.\n")
    machines = sorted({(r["machine"], r["threads"]) for r in runs if "machine" in r})
    for m, t in machines:
        text += f"\nMachine: {m}, {t} torch threads."
    loads = [v for r in runs if "machine" in r for v in r["load"]]
    if loads:
        text += f" Load average (1 min) after each epoch: {min(loads):.1f}-{max(loads):.1f}."
    for c in dict.fromkeys(r["command"] for r in runs if "command" in r):
        text += f"\n\nCommand: `{c}`"
    return text + "\n"


def pareto(points):
    """The points no other point beats in both time (lower) and accuracy (higher), by time."""
    front, best = [], -1.0
    for t, a in sorted(points, key=lambda p: (p[0], -p[1])):
        if a > best:
            front.append((t, a))
            best = a
    return front


def plot(summary: dict, path: str, note: str):
    """One panel per model and sparsity (dense in each), its Pareto frontier marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = {name: sorted({label.partition("@")[2] for label in s["rows"]} - {""}, key=float)
              for name, s in summary.items()}
    ncol = max(1, max(len(v) for v in panels.values()))
    fig, axes = plt.subplots(len(panels), ncol, figsize=(6.5 * ncol, 5 * len(panels)),
                             squeeze=False)
    colors = {m: f"C{i}" for i, m in enumerate(("dense", "default") + tuple(METHODS)
                                               + ("unstructured",))}
    for row, (name, sparsities) in zip(axes, panels.items()):
        for ax in row[len(sparsities):]:
            ax.axis("off")
        for ax, sparsity in zip(row, sparsities):
            pts = []
            for label in sorted(summary[name]["rows"], key=order):
                if label != "dense" and label.partition("@")[2] != sparsity:
                    continue
                base = label.split("@")[0]
                method = base.split("+")[0]
                xs, ys = zip(*summary[name]["rows"][label]["curve"])
                ax.plot(xs, [100 * y for y in ys], marker="o", ms=3,
                        ls="-." if base.endswith("+kernels") else
                        "-" if "+cost" not in base else ":" if base.endswith("+cost")
                        else "--", color=colors.get(method, "k"),
                        lw=2.5 if method in ("dense", "default", "unstructured") else 1.2,
                        label=label)
                pts += list(zip(xs, ys))
            front = pareto(pts)
            ax.step([p[0] for p in front], [100 * p[1] for p in front], where="post",
                    color="k", alpha=0.3, lw=6, zorder=0, label="Pareto frontier")
            if summary[name]["target"] is not None:
                ax.axhline(100 * summary[name]["target"], color="k", ls="--", lw=0.8,
                           label="dense - 1 point")
            ys = [100 * y for _, y in pts]
            ax.set_ylim(max(min(ys), max(ys) - 25) - 1, max(ys) + 1)
            timing = "quiet" if summary[name]["quiet"] else "median"
            ax.set(xlabel=f"training seconds ({timing} step time x steps)",
                   ylabel="test accuracy (%)",
                   title=f"{name}, {100 * float(sparsity):g}% sparse: {note}")
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    _io.save_figure(path, fig)
    plt.close(fig)


def report(runs, out, settings):
    quiet = None
    if os.path.exists(os.path.join(out, "step_time.json")):
        with open(os.path.join(out, "step_time.json")) as f:
            quiet = json.load(f)
    summary = summarize(runs, quiet)
    note = f"{settings['epochs']} epochs on {settings['train_images']:,} images, mean of seeds"
    text = table(summary)
    _io.atomic_write_bytes(os.path.join(out, "table.md"),
                           f"Settings: {json.dumps(settings)}\n\n{protocol(runs, settings)}\n"
                           f"{text}\n".encode())
    plot(summary, os.path.join(out, "time_to_accuracy.png"), note)
    print(text)
    return summary


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="resnet20,resnet18,vgg19")
    ap.add_argument("--variants", default=",".join(ALL_VARIANTS),
                    help=f"contenders without the sparsity ({','.join(ALL_VARIANTS)}; a method "
                         "with +costALPHA for cost_weighting=ALPHA; +minK for "
                         "min_per_layer=K)")
    ap.add_argument("--sparsities", default="0.8,0.9,0.95")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--train-images", type=int, default=8000)
    ap.add_argument("--test-images", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--prune-batches", type=int, default=4,
                    help="batches the pruning scores see (ProsPr: M + 1 = 4)")
    ap.add_argument("--prune-batch", type=int, default=128, help="their size (128)")
    ap.add_argument("--channels-last", action="store_true",
                    help="train every contender (dense too) in channels-last memory format")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    ap.add_argument("--data-root", default=MNIST, help="the MNIST IDX files (%(default)s)")
    ap.add_argument("--out", default=OUT)
    ap.add_argument("--widths", action="store_true",
                    help="only rebuild the finished runs of --models/--variants/--sparsities/"
                         "--seeds that lack their kept channels per layer, and record them")
    ap.add_argument("--summarize", action="store_true",
                    help="only the table and plot of --out (with the settings it holds); "
                         "--out A,B,...: each folder's, then one table of them side by side "
                         "(the README's)")
    args = ap.parse_args()

    import torch

    settings = {"epochs": args.epochs, "train_images": args.train_images,
                "test_images": args.test_images, "batch": args.batch, "lr": args.lr,
                "channels_last": args.channels_last, "prune_batches": args.prune_batches,
                "prune_batch": args.prune_batch}
    if args.summarize:  # each folder's own settings
        merged = {}
        for out in args.out.split(","):
            with open(os.path.join(out, "config.json")) as f:
                settings = json.load(f)
            merged.update(report(load_runs(out, settings), out, settings))
        print("\n" + side_by_side(merged))
        return
    runs = load_runs(args.out, settings)
    torch.set_num_threads(args.threads or max(1, os.cpu_count() or 1))
    names = args.models.split(",")
    labels = contenders(args.variants.split(","), [float(s) for s in args.sparsities.split(",")])
    seeds = [int(s) for s in args.seeds.split(",")]
    done = {(r["model"], r["variant"], r["seed"]) for r in runs}
    if args.widths:
        train_set, _ = mnist32(args.data_root, args.train_images, 16)
        backfill_widths(args.out, runs, train_set, settings, lambda r: r["model"] in names
                        and r["variant"] in labels and r["seed"] in seeds)
        return
    groups = [(n, s, [v for v in labels if (n, v, s) not in done]) for s in seeds for n in names]
    groups = [g for g in groups if g[2]]
    print(f"{sum(len(g[2]) for g in groups)} runs to do ({len(done)} done) in {args.out}; "
          f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
          flush=True)
    train_set, test_set = mnist32(args.data_root, args.train_images, args.test_images)
    # the command as typed, with --out and --data-root relative to the repository
    root = os.path.dirname(HERE)
    command = "python benchmarks/bench_time_to_accuracy.py " + " ".join(
        shlex.quote(os.path.relpath(a, root) if a in (args.out, args.data_root) else a)
        for a in sys.argv[1:])
    start = time.perf_counter()
    for i, (name, seed, todo) in enumerate(groups):
        rows = run_lockstep(name, todo, seed, train_set, test_set, settings,
                            lambda text: print(text, flush=True))
        for row in rows:
            row.update(machine=cpu_name(), threads=torch.get_num_threads(), command=command)
        with open(os.path.join(args.out, "runs.jsonl"), "a") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")
        left = (time.perf_counter() - start) / (i + 1) * (len(groups) - i - 1)
        print(f"[{i + 1}/{len(groups)}] {name} seed {seed} done; ~{left / 60:.0f} min left",
              flush=True)
    # Re-read: another process may have appended runs of the same folder meanwhile.
    report(load_runs(args.out, settings), args.out, settings)


if __name__ == "__main__":
    main()
