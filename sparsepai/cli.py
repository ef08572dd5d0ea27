"""The ``sparsepai`` command line (also ``python -m sparsepai``).

    sparsepai demo    the main job: every method at 90/95/98/99% sparsity, a few seeds, on the
                      embedded digits dataset, trained and evaluated; a table, CSV/JSON and a
                      plot of accuracy against sparsity
    sparsepai prune   prune a model at initialization, masks to a safetensors file
    sparsepai train   train a model (optionally with masks from a file), report test accuracy
    sparsepai sweep   the demo's comparison for any model, dataset, methods and sparsities
    sparsepai bench   time sp.topk_mask against torch.kthvalue(cat) at chosen sizes
    sparsepai irp     iterative rewind pruning (AutoSparse's data), crash-safe and resumable
    sparsepai ccc     concordance of the survival scores of two IRP runs
    sparsepai train-predictor   fit an AutoSparse predictor to IRP runs
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time


def _timed(fn, repeats):
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def _option_value(text):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def _method_options(pairs):
    out = {}
    for p in pairs or []:
        if "=" not in p:
            raise SystemExit(f"sparsepai: --option takes key=value, got {p!r}")
        k, v = p.split("=", 1)
        out[k.replace("-", "_")] = _option_value(v)
    return out


def _sparsity(text):
    v = float(text)
    if not 0 <= v < 1:
        raise argparse.ArgumentTypeError(f"sparsity must be in [0, 1), got {v}")
    return v


def _train_config(args):
    from sparsepai.train import TrainConfig

    return TrainConfig(epochs=args.epochs, batch_size=args.batch_size, optimizer=args.optimizer,
                       lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay,
                       seed=args.seed)


def _model_and_data(args):
    import torch

    from sparsepai.data import load_dataset
    from sparsepai.models import get_model

    data = load_dataset(args.dataset, args.data_root, download=args.download, seed=0)
    info = data[2]
    torch.manual_seed(args.seed)
    model = get_model(args.model, info.num_classes, info.in_channels, info.image_size)
    return model, data


def cmd_prune(args) -> int:
    import sparsepai as sp
    from sparsepai.data import loader
    from sparsepai.masks_io import save_masks

    model, (train_set, _, _) = _model_and_data(args)
    batches = loader(train_set, args.batch_size, shuffle=True, seed=args.seed)
    t0 = time.perf_counter()
    options = _method_options(args.option)
    if args.predictor:
        options["predictor"] = args.predictor
    if args.unseen_layers:
        options["unseen_layers"] = args.unseen_layers
    if args.structured:
        return _prune_structured(args, sp, model, batches, options, t0)
    masks = sp.prune(model, args.method, args.sparsity, batches, **options)
    kept = sum(int(m.sum()) for m in masks.values())
    total = sum(m.numel() for m in masks.values())
    meta = {k: v for k, v in vars(args).items() if k != "fn"}
    save_masks(args.out, masks, meta)
    print(f"{args.method}: kept {kept:,} of {total:,} prunable weights "
          f"({100 * kept / total:.2f}%) in {time.perf_counter() - t0:.1f} s -> {args.out}")
    return 0


def _prune_structured(args, sp, model, batches, options, t0) -> int:
    from sparsepai.masks_io import save_masks
    from sparsepai.structured import save_slim

    masks = sp.prune(model, args.method, args.sparsity, batches, structured=True, **options)
    kept = sum(int(m.sum()) for m in masks.values())
    total = sum(m.numel() for m in masks.values())
    meta = {k: v for k, v in vars(args).items() if k != "fn"}
    save_masks(args.out, masks, meta)
    slim = sp.slim(model, masks)
    before = sum(p.numel() for p in model.parameters())
    after = sum(p.numel() for p in slim.parameters())
    print(f"{args.method} (structured): kept {kept:,} of {total:,} channels of the pruned layers; "
          f"parameters {before:,} -> {after:,} ({100 * (1 - after / before):.1f}% fewer) in "
          f"{time.perf_counter() - t0:.1f} s -> {args.out}")
    if args.slim_out:
        save_slim(slim, args.slim_out)
        print(f"slim model -> {args.slim_out} (sparsepai.structured.load_slim(path, model))")
    return 0


def cmd_train(args) -> int:
    from sparsepai.masks_io import load_masks
    from sparsepai.train import train

    model, (train_set, test_set, _) = _model_and_data(args)
    masks, meta = load_masks(args.masks, model) if args.masks else (None, {})
    if meta.get("structured"):
        import sparsepai as sp

        # channel masks: train the physically smaller model, nothing to mask
        model, masks = sp.slim(model, masks), None
        print(f"training the slim model: {sum(p.numel() for p in model.parameters()):,} "
              "parameters")
    res = train(model, masks, train_set, test_set, _train_config(args))
    print(f"test accuracy {100 * res['test_acc']:.2f}%")
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump({"config": {k: v for k, v in vars(args).items() if k != "fn"}, **res}, f,
                      indent=1)
    return 0


def _sweep_config(args, **over):
    from sparsepai.experiment import SweepConfig

    return SweepConfig(model=args.model, dataset=args.dataset, data_root=args.data_root,
                       methods=tuple(args.methods), sparsities=tuple(args.sparsities),
                       seeds=tuple(args.seeds), train=_train_config(args), **over)


def cmd_sweep(args) -> int:
    from sparsepai.experiment import run_sweep, table

    cfg = _sweep_config(args)
    rows = run_sweep(cfg, args.out)
    print(table(rows, cfg))
    print(f"\nresults, config and plot in {args.out}/")
    return 0


def cmd_bench(args) -> int:
    import torch

    import sparsepai as sp

    print(f"{'N':>14}{'topk_mask':>12}{'kthvalue(cat)':>15}{'ratio':>8}")
    for size in args.sizes:
        n = int(size)
        g = torch.Generator().manual_seed(0)
        parts = [t.abs() for t in torch.randn(n, generator=g).chunk(args.tensors)]
        k = n // 10
        t_sp, _ = _timed(lambda: sp.topk_mask(parts, k), args.repeats)
        t_kv, _ = _timed(lambda: torch.kthvalue(torch.cat(parts), n - k + 1), args.repeats)
        print(f"{n:>14,}{t_sp:>11.3f}s{t_kv:>14.3f}s{t_kv / t_sp:>7.1f}x")
    return 0


def cmd_irp(args) -> int:
    import sparsepai as sp
    from sparsepai.autosparse.ccc import ccc_report, format_report

    model, (train_set, _, _) = _model_and_data(args)
    t0 = time.perf_counter()
    ds = sp.autosparse.irp(model, train_set, rounds=args.rounds,
                           epochs_per_round=args.epochs_per_round,
                           prune_fraction=args.prune_fraction, checkpoint_dir=args.out,
                           resume=not args.no_resume, criterion=args.criterion, lr=args.lr,
                           momentum=args.momentum, weight_decay=args.weight_decay,
                           batch_size=args.batch_size, grad_batches=args.grad_batches,
                           seed=args.train_seed, progress=not args.no_progress)
    sched = ds.description["remaining_after_round"]
    print(f"IRP: {ds.numel():,} weights, {ds.rounds} rounds, remaining after each round "
          f"{sched} in {time.perf_counter() - t0:.1f} s -> {args.out}")
    if args.ccc:
        print(format_report(ccc_report(args.out, args.ccc)))
    return 0


def cmd_ccc(args) -> int:
    from sparsepai.autosparse.ccc import ccc_report, format_report

    rep = ccc_report(args.run_a, args.run_b)
    print(json.dumps(rep, indent=1) if args.json else format_report(rep))
    return 0


def cmd_train_predictor(args) -> int:
    from sparsepai.autosparse.plot import plot_learned_function
    from sparsepai.autosparse.training import train_predictor

    options = dict(epochs=args.epochs, lr=args.lr, holdout=args.holdout,
                   holdout_fraction=args.holdout_fraction, max_train=args.max_train,
                   seed=args.seed)
    if args.batch_size:
        options["batch_size"] = args.batch_size
    pred = train_predictor(args.irp, backbone=args.backbone, features=tuple(args.features),
                           progress=not args.no_progress, **options)
    pred.save(args.out)
    h = pred.history
    print(f"{args.backbone} predictor on {list(pred.features)}: held-out MSE "
          f"{h['val_mse_initial']:.4f} before training, {h['val_mse'][-1]:.4f} after "
          f"(constant-mean predictor {h['val_mse_constant']:.4f}; "
          f"{h['split']['val_weights']:,} held-out weights by {args.holdout}) -> {args.out}")
    if args.plot:
        plot_learned_function(pred, args.plot)
        print(f"learned function plotted to {args.plot}")
    return 0


def _add_model_data(p, model="smallconv", dataset="digits"):
    p.add_argument("--model", default=model, help=f"architecture (default: {model}); see "
                   "sparsepai.models.NAMES")
    p.add_argument("--dataset", default=dataset,
                   help=f"digits, mnist, cifar10, cifar100, tinyimagenet (default: {dataset})")
    p.add_argument("--data-root", default=None, help="folder holding the dataset's files")
    p.add_argument("--download", action="store_true", help="let torchvision download the data")
    p.add_argument("--seed", type=int, default=0, help="initialization and data-order seed")


def _add_train(p, epochs=15, lr=0.05, batch_size=64):
    p.add_argument("--epochs", type=int, default=epochs, help=f"training epochs ({epochs})")
    p.add_argument("--batch-size", type=int, default=batch_size, help=f"batch size ({batch_size})")
    p.add_argument("--optimizer", default="sgd", choices=["sgd", "adamw"], help="(sgd)")
    p.add_argument("--lr", type=float, default=lr, help=f"learning rate ({lr})")
    p.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (0.9)")
    p.add_argument("--weight-decay", type=float, default=5e-4, help="weight decay (5e-4)")


def _add_sweep(p, seeds=(0, 1)):
    from sparsepai.experiment import ALL_METHODS

    p.add_argument("--methods", nargs="+", default=list(ALL_METHODS), help="methods (all)")
    p.add_argument("--sparsities", nargs="+", type=_sparsity, default=[0.9, 0.95, 0.98, 0.99],
                   help="sparsities (0.9 0.95 0.98 0.99)")
    p.add_argument("--seeds", nargs="+", type=int, default=list(seeds), help=f"seeds {list(seeds)}")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="sparsepai", description="Pruning at initialization.")
    sub = ap.add_subparsers(dest="cmd", required=True)

    d = sub.add_parser("demo", help="compare every method on the embedded digits dataset",
                       description="The main job: every pruning method at 90/95/98/99%% "
                       "sparsity, a few seeds, smallconv on scikit-learn's digits; prints a "
                       "table, writes CSV/JSON and a plot. Resumes if interrupted.")
    _add_model_data(d)
    _add_train(d)
    _add_sweep(d)
    d.add_argument("--out", default="sparsepai-demo", help="results folder (sparsepai-demo)")
    d.set_defaults(fn=cmd_sweep)

    p = sub.add_parser("prune", help="prune a model at initialization, masks to a file",
                       description="Score a freshly initialized model and write keep-masks "
                       "(safetensors).")
    _add_model_data(p)
    p.add_argument("--method", required=True, help="random, magnitude, snip, grasp, synflow, "
                   "force, prospr, autosparse (with --predictor)")
    p.add_argument("--predictor", default=None, help="autosparse: the predictor file from "
                   "'sparsepai train-predictor'")
    p.add_argument("--unseen-layers", default=None, choices=["error", "predict"],
                   help="autosparse: layer types the predictor never saw are an error "
                   "(default) or scored anyway ('predict')")
    p.add_argument("--sparsity", type=_sparsity, required=True, help="fraction removed, [0, 1)")
    p.add_argument("--batch-size", type=int, default=128, help="batch size of the scoring data")
    p.add_argument("--option", action="append", metavar="KEY=VALUE",
                   help="a method option, e.g. meta_steps=3 (repeatable)")
    p.add_argument("--out", default="masks.safetensors", help="masks file (masks.safetensors)")
    p.add_argument("--structured", action="store_true",
                   help="channel pruning: masks over output channels (methods magnitude, "
                   "random, snip = 3SP, prospr); sparsity counts the weights removed")
    p.add_argument("--slim-out", default=None,
                   help="with --structured, also write the physically smaller model here "
                   "(safetensors: weights plus the masks that rebuild its structure)")
    p.set_defaults(fn=cmd_prune)

    t = sub.add_parser("train", help="train a (masked) model and report test accuracy",
                       description="Train with the pruned weights held at zero.")
    _add_model_data(t)
    _add_train(t)
    t.add_argument("--masks", default=None, help="masks file from 'sparsepai prune'")
    t.add_argument("--out", default=None, help="write the results (JSON) here")
    t.set_defaults(fn=cmd_train)

    s = sub.add_parser("sweep", help="methods x sparsities x seeds, trained and evaluated",
                       description="The demo's comparison for any model and dataset.")
    _add_model_data(s)
    _add_train(s)
    _add_sweep(s, seeds=(0, 1, 2))
    s.add_argument("--out", default="sparsepai-sweep", help="results folder (sparsepai-sweep)")
    s.set_defaults(fn=cmd_sweep)

    b = sub.add_parser("bench", help="time sp.topk_mask against torch.kthvalue(cat)",
                       description="Median times at the given sizes (k = N/10).")
    b.add_argument("--sizes", nargs="+", type=float, default=[1e6, 1e7],
                   help="numbers of scores (default: 1e6 1e7)")
    b.add_argument("--tensors", type=int, default=60, help="tensors the scores are split into")
    b.add_argument("--repeats", type=int, default=3, help="timing repeats, median (default: 3)")
    b.set_defaults(fn=cmd_bench)

    i = sub.add_parser("irp", help="iterative rewind pruning: AutoSparse's training data",
                       description="Train, prune a fraction of the remaining weights, rewind to "
                       "initialization, repeat; records initial weights, initial gradients and "
                       "how many rounds each weight survived. Crash-safe: run the same command "
                       "again to resume.")
    _add_model_data(i)
    i.add_argument("--rounds", type=int, default=5, help="pruning rounds (5)")
    i.add_argument("--epochs-per-round", type=int, default=1, help="epochs per round (1)")
    i.add_argument("--prune-fraction", type=float, default=0.2,
                   help="fraction of the remaining weights pruned per round (0.2)")
    i.add_argument("--criterion", default="magnitude", choices=["magnitude", "snip"],
                   help="pruning criterion after training (magnitude)")
    i.add_argument("--lr", type=float, default=0.05, help="SGD learning rate (0.05)")
    i.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (0.9)")
    i.add_argument("--weight-decay", type=float, default=5e-4, help="weight decay (5e-4)")
    i.add_argument("--batch-size", type=int, default=128, help="batch size (128)")
    i.add_argument("--grad-batches", type=int, default=None,
                   help="batches the initial gradient averages over (default: all)")
    i.add_argument("--train-seed", type=int, default=0,
                   help="seed of data order and training randomness (--seed is the init) (0)")
    i.add_argument("--out", default="sparsepai-irp", help="checkpoint/dataset folder "
                   "(sparsepai-irp); must be empty or hold this very run")
    i.add_argument("--no-resume", action="store_true",
                   help="refuse to continue a run found in --out")
    i.add_argument("--ccc", default=None, metavar="OTHER_RUN",
                   help="afterwards, report the CCC of survival scores against this other run")
    i.add_argument("--no-progress", action="store_true", help="no progress bars")
    i.set_defaults(fn=cmd_irp)

    c = sub.add_parser("ccc", help="concordance (CCC) of two IRP runs' survival scores",
                       description="Lin's concordance correlation coefficient between the "
                       "survival scores of two finished IRP runs, overall and per layer.")
    c.add_argument("run_a", help="first IRP run folder")
    c.add_argument("run_b", help="second IRP run folder (same model)")
    c.add_argument("--json", action="store_true", help="print JSON instead of a table")
    c.set_defaults(fn=cmd_ccc)

    tp = sub.add_parser("train-predictor", help="fit an AutoSparse predictor to IRP runs",
                        description="Train a survival-score predictor on one or more IRP runs "
                        "with a held-out split by layer or by model; writes safetensors.")
    tp.add_argument("--irp", nargs="+", required=True, help="IRP run folders")
    tp.add_argument("--backbone", default="mlp", choices=["mlp", "resnet18", "vgg19"],
                    help="mlp, or the paper's lift-to-image resnet18/vgg19 (mlp)")
    tp.add_argument("--features", nargs="+", default=["param", "grad"],
                    choices=["param", "grad"], help="input features (param grad)")
    tp.add_argument("--epochs", type=int, default=30, help="training epochs (30)")
    tp.add_argument("--batch-size", type=int, default=None,
                    help="batch size (default: the config's, 1024)")
    tp.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (1e-3)")
    tp.add_argument("--holdout", default="layer", choices=["layer", "model"],
                    help="held-out split by whole layers or whole runs (layer)")
    tp.add_argument("--holdout-fraction", type=float, default=0.2,
                    help="share held out (0.2)")
    tp.add_argument("--max-train", type=int, default=200_000,
                    help="training weights subsampled to at most this many (200000)")
    tp.add_argument("--seed", type=int, default=0, help="split/initialisation seed (0)")
    tp.add_argument("--out", default="predictor.safetensors",
                    help="predictor file (predictor.safetensors)")
    tp.add_argument("--plot", default=None, help="also plot the learned function to this PNG")
    tp.add_argument("--no-progress", action="store_true", help="no progress bars")
    tp.set_defaults(fn=cmd_train_predictor)
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
