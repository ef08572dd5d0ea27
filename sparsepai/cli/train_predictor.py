"""``sparsepai train-predictor``: fit an AutoSparse predictor to IRP runs."""

from __future__ import annotations

import os

from sparsepai.cli import common

HELP = "fit an AutoSparse predictor to IRP runs"
DESCRIPTION = ("Train a survival-score predictor on one or more IRP runs with a held-out split "
               "by layer or by model; writes safetensors.")


def add_arguments(p) -> None:
    p.add_argument("--irp", nargs="+", required=True, help="IRP run folders")
    p.add_argument("--backbone", default="mlp", choices=["mlp", "resnet18", "vgg19"],
                   help="mlp, or the paper's lift-to-image resnet18/vgg19 (mlp)")
    # the choices are features.FEATURES (not imported here: no torch at argument parsing)
    p.add_argument("--features", nargs="+", default=["param", "grad"],
                   choices=["param", "grad", "rank", "fanin"],
                   help="input features (param grad); rank, fanin: layer-aware")
    p.add_argument("--epochs", type=common.positive_int, default=30, help="training epochs (30)")
    p.add_argument("--batch-size", type=common.positive_int, default=None,
                   help="batch size (default: the config's, 1024)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (1e-3)")
    p.add_argument("--holdout", default="layer", choices=["layer", "model"],
                   help="held-out split by whole layers or whole runs (layer)")
    p.add_argument("--holdout-fraction", type=common.open_fraction, default=0.2,
                   help="share held out, in (0, 1) (0.2)")
    p.add_argument("--max-train", type=common.positive_int, default=200_000,
                   help="training weights subsampled to at most this many (200000)")
    p.add_argument("--seed", type=int, default=0, help="split/initialisation seed (0)")
    p.add_argument("--out", default="predictor.safetensors",
                   help="predictor file (predictor.safetensors)")
    p.add_argument("--plot", default=None, help="also plot the learned function to this PNG")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args) -> int:
    from sparsepai.autosparse.plot import plot_learned_function
    from sparsepai.autosparse.training import train_predictor

    for d in args.irp:
        if not os.path.isdir(d):
            raise common.UsageError(f"--irp {d}: no such folder")
    common.check_out(args.out)
    if args.plot:
        common.check_out(args.plot, "--plot")
    common.check_distinct([("--irp", d) for d in args.irp],
                          [("--out", args.out), ("--plot", args.plot)])
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
