"""AutoSparse: IRP runs, their consistency (CCC), predictors (mlp and
the paper's lift-to-image resnet18, three feature sets) with held-out error, AutoSparse against
SNIP, ProsPr, magnitude and random at 90/95/98/99% sparsity on LeNet-5 / MNIST (same model as
the IRP source, fresh initialisations) and on smallconv / digits (transfer), predictor inference
throughput, and IRP resume under SIGKILL.

    python benchmarks/bench_autosparse.py      # -> benchmarks/results/autosparse/

Resumable: IRP runs resume from their checkpoints, predictors and pruning runs are cached in the
work folder (--work). Budgets are small (a 2-core CPU shared with other jobs); see README.md in
the results folder for what they mean.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import platform
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import torch  # noqa: E402

import sparsepai as sp  # noqa: E402
from sparsepai import _io  # noqa: E402
from sparsepai.autosparse import Predictor, ccc_report, irp, train_predictor  # noqa: E402
from sparsepai.autosparse.plot import plot_learned_function  # noqa: E402
from sparsepai.experiments.data import load_dataset, loader  # noqa: E402
from sparsepai.experiments.models import get_model  # noqa: E402
from sparsepai.experiments.train import TrainConfig, train  # noqa: E402

FEATURE_SETS = {"param+grad": ("param", "grad"), "param": ("param",), "grad": ("grad",)}
BASELINES = ("snip", "prospr", "magnitude", "random")


def log(*a):
    print(time.strftime("%H:%M:%S"), *a, flush=True)


def model_for(name, data, seed):
    info = data[2]
    torch.manual_seed(seed)
    return get_model(name, info.num_classes, info.in_channels, info.image_size)


def run_irps(args, mnist, digits):
    """The IRP runs: A and B share LeNet-5's initialisation (CCC), C is another LeNet-5
    initialisation (more training data), D is smallconv on digits (another model and dataset)."""
    spec = {
        "A_lenet5_mnist_init0_train0": ("lenet5", mnist, 0, 0),
        "B_lenet5_mnist_init0_train1": ("lenet5", mnist, 0, 1),
        "C_lenet5_mnist_init1_train0": ("lenet5", mnist, 1, 0),
        "D_smallconv_digits_init0_train0": ("smallconv", digits, 0, 0),
    }
    out, times = {}, {}
    for key, (model, data, init, tseed) in spec.items():
        t0 = time.perf_counter()
        epochs = args.irp_epochs if model == "lenet5" else 2 * args.irp_epochs
        out[key] = irp(model_for(model, data, init), data[0], rounds=args.irp_rounds,
                       epochs_per_round=epochs, prune_fraction=args.irp_fraction,
                       checkpoint_dir=os.path.join(args.work, "irp", key), seed=tseed,
                       progress=False)
        times[key] = time.perf_counter() - t0
        log(f"IRP {key}: {out[key]} ({times[key]:.0f} s, 0 if resumed)")
    return out, times


def predictor_path(args, name):
    return os.path.join(args.work, "predictors", name + ".safetensors")


def get_predictor(args, name, datasets, **kw):
    path = predictor_path(args, name)
    if os.path.exists(path):
        p = Predictor.load(path)
        return p, p.history.get("train_seconds", float("nan"))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    t0 = time.perf_counter()
    p = train_predictor(datasets, progress=False, **kw)
    p.history["train_seconds"] = time.perf_counter() - t0  # kept in the file for cached reruns
    p.save(path)
    return p, p.history["train_seconds"]


def train_predictors(args, irps):
    lenet = [irps["A_lenet5_mnist_init0_train0"], irps["C_lenet5_mnist_init1_train0"]]
    rows, preds = [], {}
    plans = []
    for fname, feats in FEATURE_SETS.items():
        plans.append((f"mlp_{fname}_layer", lenet, dict(backbone="mlp", features=feats,
                                                          epochs=args.mlp_epochs)))
    # the per-layer normalisation, for comparison (the default is per model)
    plans.append(("mlp_param+grad_layer_layernorm", lenet,
                  dict(backbone="mlp", epochs=args.mlp_epochs, normalization="layer")))
    for fname, feats in FEATURE_SETS.items():
        plans.append((f"mlp_{fname}_model", lenet + [irps["D_smallconv_digits_init0_train0"]],
                      dict(backbone="mlp", features=feats, epochs=args.mlp_epochs,
                           holdout="model", holdout_datasets=(2,))))
    for fname, feats in FEATURE_SETS.items():
        plans.append((f"resnet18_{fname}_layer", lenet,
                      dict(backbone="resnet18", features=feats, epochs=args.img_epochs,
                           batch_size=32, max_train=args.img_train, max_val=args.img_val)))
    for name, data, kw in plans:
        p, secs = get_predictor(args, name, data, **kw)
        h = p.history
        best = min(h["val_mse"]) if h["val_mse"] else float("nan")
        rows.append({"predictor": name, "backbone": p.config.backbone,
                     "features": "+".join(p.features), "normalization": p.config.normalization,
                     "holdout": p.config.holdout,
                     "train_weights": h["split"]["train_weights"],
                     "val_weights": h["split"]["val_weights"],
                     "val_units": h["split"]["val_units"], "epochs": p.config.epochs,
                     "val_mse_initial": h["val_mse_initial"],
                     "val_mse_constant": h["val_mse_constant"],
                     "val_mse_final": h["val_mse"][-1], "val_mse_best": best,
                     "train_seconds": round(secs, 1), "train_mse": h["train_mse"],
                     "val_mse": h["val_mse"]})
        preds[name] = p
        log(f"predictor {name}: held-out MSE {h['val_mse_initial']:.4f} -> "
            f"{h['val_mse'][-1]:.4f} (constant {h['val_mse_constant']:.4f}) in {secs:.0f} s")
    return rows, preds


def score_all(method, model, data, seed, predictor=None):
    batches = loader(data[0], 128, shuffle=True, seed=seed)
    t0 = time.perf_counter()
    if method.startswith("autosparse"):
        s = sp.score(model, "autosparse", batches, predictor=predictor)
    elif method == "random":
        s = sp.score(model, "random", batches, seed=seed)
    else:
        s = sp.score(model, method, batches)
    return s, time.perf_counter() - t0


def pruning_runs(args, arch, data, methods, seeds, log_path, train_cfg):
    """Score once per (method, seed), threshold at every sparsity with sp.topk_mask, train."""
    done = {}
    if os.path.exists(log_path):
        with open(log_path) as f:
            for line in f:
                if line.strip():
                    r = json.loads(line)
                    done[(r["method"], r["sparsity"], r["seed"])] = r
    rows = list(done.values())
    for seed in seeds:
        for method, pred in methods.items():
            todo = [s for s in args.sparsities if (method, s, seed) not in done]
            if not todo:
                continue
            model = model_for(arch, data, seed)
            scores, secs = score_all(method, model, data, seed, pred)
            names = list(scores)
            total = sum(scores[n].numel() for n in names)
            for sparsity in todo:
                keep = total - round(sparsity * total)
                masks = dict(zip(names, sp.topk_mask([scores[n] for n in names], keep,
                                                     nan="low").masks))
                m = model_for(arch, data, seed)
                res = train(m, masks, data[0], data[1], TrainConfig(**{**train_cfg, "seed": seed}),
                            progress=False)
                row = {"arch": arch, "method": method, "sparsity": sparsity, "seed": seed,
                       "test_acc": res["test_acc"], "score_seconds": round(secs, 2),
                       "kept": int(sum(int(x.sum()) for x in masks.values())),
                       "prunable": total,
                       "dead_layers": [n for n in names if not bool(masks[n].any())]}
                rows.append(row)
                with open(log_path, "a") as f:
                    f.write(json.dumps(row) + "\n")
                log(f"{arch} {method} {sparsity} seed {seed}: {100 * res['test_acc']:.2f}%")
    return rows


def throughput(args, preds):
    out = {"load_average_before": os.getloadavg()}
    mlp = preds["mlp_param+grad_layer"]
    x = torch.randn(args.mlp_throughput_n, 2)
    mlp.predict(x[:100_000])
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        mlp.predict(x)
        times.append(time.perf_counter() - t0)
    out["mlp"] = {"weights": len(x), "chunk": mlp.default_chunk(),
                  "weights_per_second_median": len(x) / statistics.median(times),
                  "weights_per_second_best": len(x) / min(times),
                  "seconds": times, "config": {"hidden": mlp.config.hidden,
                                               "depth": mlp.config.depth}}
    rn = preds["resnet18_param+grad_layer"]
    xb = torch.randn(args.img_batched_n, 2)
    rn.predict(xb[:256])
    t0 = time.perf_counter()
    yb = rn.predict(xb, chunk_size=256)
    t_b = time.perf_counter() - t0
    t0 = time.perf_counter()
    y1 = torch.stack([rn.predict(xb[i:i + 1], chunk_size=1)[0]
                      for i in range(args.img_single_n)])
    t_1 = time.perf_counter() - t0
    out["resnet18"] = {
        "batched_weights": len(xb), "batched_chunk": 256, "batched_seconds": t_b,
        "batched_weights_per_second": len(xb) / t_b,
        "single_weights_measured": args.img_single_n, "single_seconds": t_1,
        "single_weights_per_second": args.img_single_n / t_1,
        "speedup_batched_over_single": (len(xb) / t_b) / (args.img_single_n / t_1),
        "max_abs_diff_batched_vs_single": float((yb[:args.img_single_n] - y1).abs().max()),
        "extrapolated_hours_single_for_11M_weights": 11e6 / (args.img_single_n / t_1) / 3600,
        "extrapolated_hours_batched_for_11M_weights": 11e6 / (len(xb) / t_b) / 3600,
        "note": "one-forward-per-weight rate measured on a small sample and extrapolated"}
    out["load_average_after"] = os.getloadavg()
    log(f"throughput: mlp {out['mlp']['weights_per_second_median'] / 1e6:.1f} M weights/s "
        f"(median); resnet18 batched {out['resnet18']['batched_weights_per_second']:.0f}/s vs "
        f"single {out['resnet18']['single_weights_per_second']:.1f}/s = "
        f"{out['resnet18']['speedup_batched_over_single']:.0f}x")
    return out


def summarize(rows):
    groups = {}
    for r in rows:
        groups.setdefault((r["arch"], r["method"], r["sparsity"]), []).append(r["test_acc"])
    return [{"arch": a, "method": m, "sparsity": s, "mean_acc": statistics.mean(v),
             "std_acc": statistics.pstdev(v) if len(v) > 1 else 0.0, "runs": len(v)}
            for (a, m, s), v in sorted(groups.items())]


def plot_accuracy(summary, arch, path, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for method in sorted({r["method"] for r in summary if r["arch"] == arch}):
        pts = sorted((r["sparsity"], r) for r in summary if r["arch"] == arch
                     and r["method"] == method)
        xs = [100 * (1 - s) for s, _ in pts]
        ax.errorbar(xs, [100 * r["mean_acc"] for _, r in pts],
                    yerr=[100 * r["std_acc"] for _, r in pts], marker="o", capsize=3,
                    label=method, lw=2.5 if method.startswith("autosparse") else 1.2)
    ax.set_xscale("log")
    ax.invert_xaxis()
    ax.set(xlabel="weights remaining (%)", ylabel="test accuracy (%)", title=title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    _io.save_figure(path, fig, dpi=120)
    plt.close(fig)


def plot_curves(pred_rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, bb in zip(axes, ("mlp", "resnet18")):
        for r in pred_rows:
            if (r["backbone"] == bb and r["holdout"] == "layer"
                    and r["normalization"] == "model"):
                ep = range(1, len(r["val_mse"]) + 1)
                line, = ax.plot(ep, r["val_mse"], marker=".", label=f"{r['features']} held-out")
                ax.plot(ep, r["train_mse"], ls=":", color=line.get_color())
                ax.axhline(r["val_mse_constant"], color=line.get_color(), ls="--", lw=0.8)
        ax.set(xlabel="epoch", ylabel="MSE (normalised survival)", yscale="log",
               title=f"{bb}: held-out (solid), train (dotted),\nconstant-mean predictor (dashed)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    _io.save_figure(path, fig, dpi=110)
    plt.close(fig)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", default=os.path.join(HERE, "..", "..", "shared", "data",
                                                        "mnist"))
    ap.add_argument("--out", default=os.path.join(HERE, "results", "autosparse"))
    ap.add_argument("--work", default="/tmp/sparsepai-autosparse-bench",
                    help="IRP checkpoints, predictors and the run log (resumable)")
    ap.add_argument("--irp-rounds", type=int, default=10)
    ap.add_argument("--irp-epochs", type=int, default=2)
    ap.add_argument("--irp-fraction", type=float, default=0.3)
    ap.add_argument("--mlp-epochs", type=int, default=30)
    ap.add_argument("--img-epochs", type=int, default=4)
    ap.add_argument("--img-train", type=int, default=512)
    ap.add_argument("--img-val", type=int, default=512)
    ap.add_argument("--train-epochs", type=int, default=4, help="LeNet-5/MNIST training epochs")
    ap.add_argument("--digits-epochs", type=int, default=10)
    ap.add_argument("--seeds", nargs="+", type=int, default=[10, 11, 12])
    ap.add_argument("--sparsities", nargs="+", type=float, default=[0.9, 0.95, 0.98, 0.99])
    ap.add_argument("--mlp-throughput-n", type=int, default=10_000_000)
    ap.add_argument("--img-batched-n", type=int, default=1024)
    ap.add_argument("--img-single-n", type=int, default=32)
    ap.add_argument("--kills", type=int, default=5)
    ap.add_argument("--skip-kill", action="store_true")
    ap.add_argument("--replot", action="store_true",
                    help="only redraw predictor_training.png from --out/results.json")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op threads (1: on this shared 2-core machine LeNet-5 "
                    "trains ~8x faster with 1 thread than with 2)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.replot:
        with open(os.path.join(args.out, "results.json")) as f:
            plot_curves(json.load(f)["predictors"], os.path.join(args.out,
                                                                 "predictor_training.png"))
        return
    os.makedirs(args.out, exist_ok=True)
    os.makedirs(args.work, exist_ok=True)
    t_all = time.perf_counter()
    result = {"command": "python " + " ".join([os.path.relpath(sys.argv[0], os.getcwd())]
                                              + sys.argv[1:]),
              "args": vars(args), "machine": {"cpus": os.cpu_count(),
                                              "torch_threads": torch.get_num_threads(),
                                              "python": platform.python_version(),
                                              "torch": torch.__version__}}

    mnist = load_dataset("mnist", os.path.abspath(args.data_root))
    digits = load_dataset("digits")
    irps, irp_times = run_irps(args, mnist, digits)
    result["irp"] = {k: {"weights": d.numel(), "rounds": d.rounds,
                         "remaining_after_round": d.description["remaining_after_round"],
                         "seconds": irp_times[k],
                         "survival_histogram": torch.bincount(torch.cat(
                             [d.survival[n].reshape(-1) for n in d.names]).long(),
                             minlength=d.rounds + 1).tolist()} for k, d in irps.items()}
    result["ccc_A_vs_B_same_init_other_data_order"] = ccc_report(
        irps["A_lenet5_mnist_init0_train0"].directory,
        irps["B_lenet5_mnist_init0_train1"].directory)
    log(f"CCC A vs B: {result['ccc_A_vs_B_same_init_other_data_order']['overall']:.4f}")

    pred_rows, preds = train_predictors(args, irps)
    result["predictors"] = pred_rows
    w = csv.DictWriter(buf := io.StringIO(), fieldnames=[k for k in pred_rows[0] if k not in
                                                        ("train_mse", "val_mse", "val_units")])
    w.writeheader()
    w.writerows([{k: v for k, v in r.items() if k in w.fieldnames} for r in pred_rows])
    _io.atomic_write_bytes(os.path.join(args.out, "predictors.csv"), buf.getvalue().encode())
    plot_curves(pred_rows, os.path.join(args.out, "predictor_training.png"))
    plot_learned_function(preds["mlp_param+grad_layer"],
                          os.path.join(args.out, "learned_function_mlp.png"),
                          irps["A_lenet5_mnist_init0_train0"])
    plot_learned_function(preds["resnet18_param+grad_layer"],  # coarse: ~35 forwards/s here
                          os.path.join(args.out, "learned_function_resnet18.png"),
                          irps["A_lenet5_mnist_init0_train0"], grid=21)

    result["throughput"] = throughput(args, preds)

    auto = preds["mlp_param+grad_layer"]
    own = preds["mlp_param+grad_model"]  # trained on LeNet-5 A, C; D held out
    methods = {"autosparse_mlp": auto,
               "autosparse_mlp_layernorm": preds["mlp_param+grad_layer_layernorm"],
               **{m: None for m in BASELINES}}
    mcfg = dict(epochs=args.train_epochs, batch_size=128, lr=0.05)
    rows = pruning_runs(args, "lenet5", mnist, methods, args.seeds,
                        os.path.join(args.work, "runs_lenet5.jsonl"), mcfg)
    dcfg = dict(epochs=args.digits_epochs, batch_size=64, lr=0.05)
    rows += pruning_runs(args, "smallconv", digits, {"autosparse_mlp_transfer": own,
                                                     **{m: None for m in BASELINES}},
                         args.seeds, os.path.join(args.work, "runs_smallconv.jsonl"), dcfg)
    summary = summarize(rows)
    result["pruning_runs"] = rows
    result["pruning_summary"] = summary
    w = csv.DictWriter(buf := io.StringIO(), fieldnames=["arch", "method", "sparsity", "seed",
                       "test_acc", "score_seconds", "kept", "prunable", "dead_layers"])
    w.writeheader()
    w.writerows(rows)
    _io.atomic_write_bytes(os.path.join(args.out, "pruning.csv"), buf.getvalue().encode())
    plot_accuracy(summary, "lenet5", os.path.join(args.out, "accuracy_lenet5_mnist.png"),
                  f"LeNet-5 / MNIST test split, {args.train_epochs} epochs, seeds {args.seeds}")
    plot_accuracy(summary, "smallconv", os.path.join(args.out, "accuracy_smallconv_digits.png"),
                  f"smallconv / digits (transfer from LeNet-5 IRP), {args.digits_epochs} epochs")

    if not args.skip_kill:
        import tempfile

        from irp_resume_kill import run_kill_test

        with tempfile.TemporaryDirectory() as tmp:
            result["resume_kill"] = run_kill_test(
                ["--model", "lenet5", "--dataset", "digits", "--rounds", "5",
                 "--epochs-per-round", "2", "--prune-fraction", "0.3"], args.kills, 0, tmp,
                log=log, threads=args.threads)
        log(f"resume under SIGKILL: identical={result['resume_kill']['identical']}")
    result["total_seconds"] = time.perf_counter() - t_all
    _io.atomic_write_bytes(f"{args.out}/results.json", json.dumps(result, indent=1).encode())
    log(f"done in {result['total_seconds']:.0f} s -> {args.out}")


if __name__ == "__main__":
    main()
