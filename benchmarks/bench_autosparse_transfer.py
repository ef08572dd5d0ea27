"""AutoSparse as the paper uses it: predictors trained on iterative rewind
pruning (IRP) of LeNet-5 on the MNIST split prune fresh LeNet-5 initialisations (same model) and
two other architectures, smallconv and ResNet-20 (transfer), against SNIP, ProsPr and magnitude.

    python benchmarks/bench_autosparse_transfer.py --data-root ../shared/data/mnist
    # -> benchmarks/results/autosparse_transfer/

Stages, each cached in --work (IRP checkpoints, predictors) or appended to ``runs.jsonl`` in
--out, so an interrupted run resumes: (1) IRP of LeNet-5 from inits 0, 1, 2 under two schedules,
``coarse`` (30% of the remaining weights per round) and ``fine`` (15%: twice as many, finer rounds
around 95%); (2) predictor variants trained on inits 0 and 1, init 2 held out; (3) pruning runs:
score once per (method, seed), threshold globally with ``sp.topk_mask`` at every sparsity, train
briefly; (4) tables and a plot (``--summarize`` redraws them from ``runs.jsonl`` alone).

``irp_ticket`` (seeds 0-2 only) is IRP's own mask on its own init, the lottery ticket.
``irp_layers`` is a diagnostic, not a method: IRP's own per-layer densities at the target sparsity
(LeNet-5 only, read from the fine IRP run of init 0), magnitude inside each layer. It is what a
predictor that learned IRP's layer allocation perfectly, and magnitude within a layer, would do.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import torch  # noqa: E402

import sparsepai as sp  # noqa: E402
from sparsepai import _io  # noqa: E402
from sparsepai.autosparse import Predictor, irp, train_predictor  # noqa: E402
from sparsepai.experiments.data import load_dataset, loader  # noqa: E402
from sparsepai.experiments.models import get_model  # noqa: E402
from sparsepai.experiments.train import TrainConfig, train  # noqa: E402

SCHEDULES = {"coarse": (13, 0.3), "fine": (26, 0.15)}  # rounds, prune_fraction
INITS = (0, 1, 2)  # predictors train on 0 and 1; 2 is the held-out IRP run
PREDICTORS = {  # name: (IRP schedule, features, normalization)
    "as_base": ("coarse", ("param", "grad"), "model"),
    "as_fine": ("fine", ("param", "grad"), "model"),
    "as_fanin": ("coarse", ("param", "grad", "fanin"), "model"),
    "as_fine_fanin": ("fine", ("param", "grad", "fanin"), "model"),
    "as_fine_rank_fanin": ("fine", ("param", "rank", "fanin"), "model"),
    "as_layer_fanin": ("coarse", ("param", "grad", "fanin"), "layer"),
    "as_fine_layer_fanin": ("fine", ("param", "grad", "fanin"), "layer"),
}
BASELINES = ("snip", "prospr", "magnitude")


def log(*a):
    print(time.strftime("%H:%M:%S"), *a, flush=True)


def model_for(arch, seed):
    torch.manual_seed(seed)
    return get_model(arch, 10, 1, 28)


def run_irps(args, train_set):
    out = {}
    for sched, (rounds, frac) in SCHEDULES.items():
        for init in INITS:
            t0 = time.perf_counter()
            key = f"lenet5_init{init}_{sched}"
            out[key] = irp(model_for("lenet5", init), train_set, rounds=rounds,
                           epochs_per_round=args.irp_epochs, prune_fraction=frac,
                           checkpoint_dir=os.path.join(args.work, "irp", key), seed=0,
                           progress=False)
            log(f"IRP {key}: {time.perf_counter() - t0:.0f} s (0 if cached)")
    return out


def get_predictors(args, irps):
    preds, rows = {}, []
    for name, (sched, feats, norm) in PREDICTORS.items():
        path = os.path.join(args.work, "predictors", name + ".safetensors")
        if os.path.exists(path):
            p = Predictor.load(path)
        else:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            t0 = time.perf_counter()
            p = train_predictor([irps[f"lenet5_init{i}_{sched}"] for i in INITS],
                                features=feats, normalization=norm, epochs=args.mlp_epochs,
                                holdout="model", holdout_datasets=(2,), progress=False)
            p.history["train_seconds"] = time.perf_counter() - t0
            p.save(path)
        h = p.history
        rows.append({"predictor": name, "irp": sched, "features": "+".join(feats),
                     "normalization": norm, "train_weights": h["split"]["train_weights"],
                     "val_weights": h["split"]["val_weights"],
                     "val_mse_constant": h["val_mse_constant"], "val_mse": h["val_mse"][-1],
                     "train_seconds": round(h.get("train_seconds", float("nan")), 1)})
        preds[name] = p
        log(f"predictor {name}: held-out (init 2) MSE {h['val_mse'][-1]:.4f} "
            f"(constant {h['val_mse_constant']:.4f})")
    return preds, rows


def irp_vs_magnitude(irps, sparsities):
    """How far IRP's survival ranking is from global magnitude at the IRP run's own init:
    Spearman correlation over all weights, and at each sparsity the share of the weights kept by
    survival (ties broken at random, seeded) that global magnitude at init keeps too."""
    out = {}
    for key, ds in irps.items():
        surv = torch.cat([ds.survival[n].reshape(-1).double() for n in ds.names])
        mag = torch.cat([ds.params[n].reshape(-1).abs().double() for n in ds.names])
        g = torch.Generator().manual_seed(0)
        jitter = torch.rand(len(surv), generator=g, dtype=torch.double)

        def ranks(x):
            r = torch.empty_like(x)
            r[torch.argsort(x)] = torch.arange(len(x), dtype=x.dtype)
            return r
        rs, rm = ranks(surv + 0.5 * jitter), ranks(mag)  # survival is integer: ties at random
        row = {"spearman_survival_vs_abs_w0": float(torch.corrcoef(torch.stack([rs, rm]))[0, 1])}
        for s in sparsities:
            keep = len(surv) - round(s * len(surv))
            a = set(torch.topk(rs, keep).indices.tolist())
            b = set(torch.topk(rm, keep).indices.tolist())
            row[f"overlap_at_{s:g}"] = len(a & b) / keep
        out[key] = row
        log(f"{key}: IRP survival vs |w0| {row}")
    return out


def topk_masks(scores):
    names = list(scores)
    total = sum(scores[n].numel() for n in names)

    def at(sparsity):
        keep = total - round(sparsity * total)
        return dict(zip(names, sp.topk_mask([scores[n] for n in names], keep, nan="low").masks))
    return at


def irp_layer_masks(ds):
    """Per-layer densities of IRP's survival ranking at the sparsity (ties by the IRP run's own
    |w|), applied to a fresh model by magnitude inside each layer."""
    names = ds.names
    rank = {n: ds.survival[n].double() + ds.params[n].abs().double() / (
        1 + ds.params[n].abs().max().double()) for n in names}
    total = sum(rank[n].numel() for n in names)

    def for_model(model, seed):
        params = dict(model.named_parameters())

        def at(sparsity):
            keep = total - round(sparsity * total)
            ref = sp.topk_mask([rank[n] for n in names], keep).masks
            out = {}
            for n, m in zip(names, ref):
                k = int(m.sum())
                w = params[n].detach().abs().reshape(-1)
                mask = torch.zeros(w.numel(), dtype=torch.bool)
                mask[torch.topk(w, k).indices] = True
                out[n] = mask.view(params[n].shape)
            return out
        return at
    return for_model


def irp_ticket(irps):
    """The IRP run's own survival ranking on its own initialisation (the lottery ticket, ties
    by |w|): only for seeds that are IRP inits. How much better than magnitude at init the
    information a predictor tries to learn is."""
    def for_model(model, seed):
        if seed not in INITS:
            raise ValueError(f"irp_ticket: seed {seed} is not an IRP init {INITS}")
        ds = irps[f"lenet5_init{seed}_fine"]
        params = dict(model.named_parameters())
        assert all(torch.equal(params[n].detach(), ds.params[n]) for n in ds.names)
        return topk_masks({n: ds.survival[n].double() + ds.params[n].abs().double() / (
            1 + ds.params[n].abs().max().double()) for n in ds.names})
    return for_model


def mask_overlap(train_set, preds, names, seeds, sparsities):
    """Share of each predictor's kept weights that global magnitude keeps too, on fresh LeNet-5
    inits (compare with irp_vs_magnitude: how far IRP itself is from magnitude)."""
    out = {}
    for seed in seeds:
        model = model_for("lenet5", seed)
        mag = topk_masks(sp.score(model, "magnitude", None))
        for name in names:
            at = topk_masks(sp.score(model, "autosparse", loader(train_set, 128, shuffle=True,
                                                                 seed=seed),
                                     predictor=preds[name]))
            for s in sparsities:
                a, m = at(s), mag(s)
                both = sum(int((a[n] & m[n]).sum()) for n in a)
                out[f"{name} {s:g} seed {seed}"] = both / sum(int(a[n].sum()) for n in a)
    log(f"predictor masks vs magnitude: {out}")
    return out


def subset(ds, n):
    return ds if n is None or n >= len(ds) else torch.utils.data.Subset(ds, range(n))


def pruning_runs(args, arch, data, methods, seeds, sparsities, train_cfg, log_path, done):
    train_set, test_set = data
    for seed in seeds:
        for method, how in methods.items():
            todo = [s for s in sparsities if (arch, method, s, seed) not in done]
            if not todo:
                continue
            model = model_for(arch, seed)
            t0 = time.perf_counter()
            if callable(how):
                at = how(model, seed)
            else:
                batches = loader(train_set, 128, shuffle=True, seed=seed)
                kw = {"predictor": how, "unseen_layers": "predict"} if how is not None else {}
                at = topk_masks(sp.score(model, "autosparse" if how is not None else method,
                                         batches, **kw))
            secs = time.perf_counter() - t0
            for sparsity in todo:
                masks = at(sparsity)
                m = model_for(arch, seed)
                t1 = time.perf_counter()
                res = train(m, masks, train_set, test_set,
                            TrainConfig(**{**train_cfg, "seed": seed}), progress=False)
                row = {"arch": arch, "method": method, "sparsity": sparsity, "seed": seed,
                       "test_acc": res["test_acc"], "score_seconds": round(secs, 2),
                       "train_seconds": round(time.perf_counter() - t1, 1),
                       "train_images": len(train_set), "epochs": train_cfg["epochs"],
                       "batch_size": train_cfg["batch_size"],
                       "density": {n: round(float(v.float().mean()), 5)
                                   for n, v in masks.items()}}
                done[(arch, method, sparsity, seed)] = row
                with open(log_path, "a") as f:
                    f.write(json.dumps(row) + "\n")
                log(f"{arch} {method} {sparsity} seed {seed}: {100 * res['test_acc']:.2f}% "
                    f"({row['train_seconds']} s)")


def load_runs(path):
    done = {}
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                if line.strip():
                    r = json.loads(line)
                    done[(r["arch"], r["method"], r["sparsity"], r["seed"])] = r
    return done


def summarize(done):
    """``{(arch, seeds, method, sparsity): (mean, std, min, runs)}``, accuracies in %; ``seeds``
    is ``"fresh"`` (not an IRP init) or ``"irp inits"`` (the irp_ticket reference): never mixed."""
    groups = {}
    for (arch, method, s, seed), r in sorted(done.items()):
        seeds = "irp inits" if seed in INITS else "fresh"
        groups.setdefault((arch, seeds, method, s), []).append(100 * r["test_acc"])
    return {k: (statistics.mean(v), statistics.pstdev(v), min(v), len(v))
            for k, v in groups.items()}


def tables(summary, pred_rows, header):
    lines = [header, ""]
    if pred_rows:
        lines += ["## Predictors (mlp, trained on IRP of LeNet-5 inits 0 and 1; held out: init 2)",
                  "", "| predictor | IRP | features | normalisation | held-out MSE | constant "
                  "MSE |", "|---|---|---|---|---|---|"]
        lines += [f"| {r['predictor']} | {r['irp']} | {r['features']} | {r['normalization']} | "
                  f"{r['val_mse']:.4f} | {r['val_mse_constant']:.4f} |" for r in pred_rows]
        lines.append("")
    for arch, seeds in sorted({k[:2] for k in summary}, key=lambda k: (k[0], k[1] != "fresh")):
        sub = {(m, s): v for (a, ss, m, s), v in summary.items() if (a, ss) == (arch, seeds)}
        sps = sorted({s for _, s in sub})
        lines += [f"## {arch}, {seeds} seeds: test accuracy %, mean +- std [min] (runs)", "",
                  "| method | " + " | ".join(f"{100 * s:g}%" for s in sps) + " |",
                  "|---|" + "---|" * len(sps)]
        methods = sorted({m for m, _ in sub},
                         key=lambda m: (m.startswith("as_") or m.startswith("irp_"), m))
        for m in methods:
            cells = []
            for s in sps:
                v = sub.get((m, s))
                cells.append("-" if v is None else
                             f"{v[0]:.2f} +- {v[1]:.2f} [{v[2]:.1f}] ({v[3]})")
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def plot(summary, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # exploratory variants run on one seed stay in tables.md only
    fresh = {(a, m, s): v for (a, ss, m, s), v in summary.items() if ss == "fresh" and v[3] > 1}
    archs = sorted({a for a, _, _ in fresh})
    fig, axes = plt.subplots(1, len(archs), figsize=(5.2 * len(archs), 4.3), squeeze=False)
    for ax, arch in zip(axes[0], archs):
        for m in sorted({m for a, m, _ in fresh if a == arch}):
            pts = sorted((s, v) for (a, mm, s), v in fresh.items() if a == arch and mm == m)
            ax.errorbar([100 * s for s, _ in pts], [v[0] for _, v in pts],
                        yerr=[v[1] for _, v in pts], marker="o", capsize=3, label=m,
                        lw=1.2 if m in BASELINES else 2.0, ls="-" if m in BASELINES else "--")
        ax.set(title=f"{arch} (fresh inits)", xlabel="sparsity (%)", ylabel="test accuracy (%)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    _io.save_figure(path, fig, dpi=110)
    plt.close(fig)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", default=os.path.join(HERE, "..", "..", "shared", "data",
                                                        "mnist"))
    ap.add_argument("--out", default=os.path.join(HERE, "results", "autosparse_transfer"))
    ap.add_argument("--work", default="/tmp/sparsepai-autosparse-transfer")
    ap.add_argument("--irp-epochs", type=int, default=2)
    ap.add_argument("--mlp-epochs", type=int, default=30)
    ap.add_argument("--archs", nargs="+", default=["lenet5", "smallconv", "resnet20"])
    ap.add_argument("--methods", nargs="+", default=None,
                    help="subset of the baselines, predictors and irp_layers (default: all)")
    ap.add_argument("--seeds", nargs="+", type=int, default=[10, 11, 12, 13, 14])
    ap.add_argument("--sparsities", nargs="+", type=float, default=[0.9, 0.95, 0.98])
    ap.add_argument("--epochs", type=int, default=4, help="training epochs of the pruned nets")
    ap.add_argument("--batch-size", type=int, default=128, help="training batch size")
    ap.add_argument("--train-images", type=int, default=None,
                    help="first N training images (default all 8,000; e.g. 3000 for resnet20)")
    ap.add_argument("--summarize", action="store_true", help="only redraw from runs.jsonl")
    ap.add_argument("--overlap", nargs="*", default=None, metavar="PREDICTOR",
                    help="only measure these predictors' masks against magnitude (--seeds, "
                    "--sparsities) -> mask_overlap.json")
    args = ap.parse_args()
    torch.set_num_threads(1)  # a shared 2-core machine: see bench_autosparse.py --threads
    os.makedirs(args.out, exist_ok=True)
    runs_path = os.path.join(args.out, "runs.jsonl")
    done = load_runs(runs_path)
    pred_rows = []
    if not args.summarize:
        command = "python " + " ".join([os.path.relpath(sys.argv[0])] + sys.argv[1:])
        with open(os.path.join(args.out, "commands.txt"), "a") as f:
            f.write(command + "\n")
        mnist = load_dataset("mnist", os.path.abspath(args.data_root))
        irps = run_irps(args, mnist[0])
        _io.atomic_write_bytes(os.path.join(args.out, "irp_vs_magnitude.json"), json.dumps(
            irp_vs_magnitude(irps, (0.9, 0.95, 0.98)), indent=1).encode())
        preds, pred_rows = get_predictors(args, irps)
        _io.atomic_write_bytes(os.path.join(args.out, "predictors.json"),
                               json.dumps(pred_rows, indent=1).encode())
        if args.overlap is not None:
            overlap = mask_overlap(mnist[0], preds, args.overlap, args.seeds, args.sparsities)
            _io.atomic_write_bytes(os.path.join(args.out, "mask_overlap.json"),
                                   json.dumps(overlap, indent=1).encode())
            return
        methods = {**{m: None for m in BASELINES}, **preds,
                   "irp_layers": irp_layer_masks(irps["lenet5_init0_fine"]),
                   "irp_ticket": irp_ticket(irps)}
        if args.methods is None:
            methods.pop("irp_ticket")  # only on IRP inits: --seeds 0 1 2 --methods irp_ticket
        if args.methods:
            methods = {m: v for m, v in methods.items() if m in args.methods}
        data = (subset(mnist[0], args.train_images), mnist[1])
        cfg = dict(epochs=args.epochs, batch_size=args.batch_size, lr=0.05)
        for arch in args.archs:
            ms = {m: v for m, v in methods.items()
                  if arch == "lenet5" or m not in ("irp_layers", "irp_ticket")}
            pruning_runs(args, arch, data, ms, args.seeds, args.sparsities, cfg, runs_path, done)
    elif os.path.exists(os.path.join(args.out, "predictors.json")):
        with open(os.path.join(args.out, "predictors.json")) as f:
            pred_rows = json.load(f)
    summary = summarize(done)
    header = ("# AutoSparse same-model and transfer tables (generated by "
              "benchmarks/bench_autosparse_transfer.py; commands in commands.txt)")
    _io.atomic_write_bytes(os.path.join(args.out, "tables.md"),
                           (tables(summary, pred_rows, header) + "\n").encode())
    plot(summary, os.path.join(args.out, "accuracy.png"))
    log(f"tables -> {os.path.join(args.out, 'tables.md')}")


if __name__ == "__main__":
    main()
