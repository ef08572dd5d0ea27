"""``sparsepai sweep``: methods x sparsities x seeds, pruned, trained and evaluated; resumable
in the same folder with the same settings."""

from __future__ import annotations

from sparsepai.cli import common

HELP = "methods x sparsities x seeds, trained and evaluated"
DESCRIPTION = ("The demo's comparison for any model and dataset. Run again with the same "
               "settings to resume; a folder holding a sweep of other settings is refused.")


def add_arguments(p, *, seeds=(0, 1, 2), out: str = "sparsepai-sweep") -> None:
    from sparsepai.experiments.sweep import ALL_METHODS

    common.add_model_data(p)
    common.add_train(p)
    p.add_argument("--methods", nargs="+", default=list(ALL_METHODS), help="methods (all)")
    p.add_argument("--sparsities", nargs="+", type=common.sparsity,
                   default=[0.9, 0.95, 0.98, 0.99], help="sparsities (0.9 0.95 0.98 0.99)")
    p.add_argument("--seeds", nargs="+", type=int, default=list(seeds),
                   help=f"seeds {list(seeds)}")
    p.add_argument("--ablations", type=ablations, default=(),
                   help="sanity checks beside every method, comma-separated: shuffle (kept "
                        "positions shuffled within each layer), reinit (same masks, weights drawn "
                        "afresh), invert (lowest scores kept at the same per-layer counts)")
    p.add_argument("--out", default=out, help=f"results folder ({out})")


def ablations(text: str) -> tuple:
    """``"shuffle,reinit"`` -> ``("shuffle", "reinit")``, each checked."""
    import argparse

    from sparsepai.masks.ablate import ABLATIONS

    names = tuple(a.strip() for a in text.split(",") if a.strip())
    bad = [a for a in names if a not in ABLATIONS]
    if bad or not names or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"--ablations: distinct names of {', '.join(ABLATIONS)} "
                                         f"separated by commas, got {text!r}")
    return names


def run(args) -> int:
    import sys

    from sparsepai.experiments.report import table
    from sparsepai.experiments.sweep import run_sweep

    cfg = config(args)
    with lock(args.out):
        rows = run_sweep(cfg, args.out, command="sparsepai " + " ".join(sys.argv[1:]))
    print(table(rows, cfg))
    print(f"\nresults, config and plot in {args.out}/")
    return 0


def lock(out: str):
    """The ``--out`` folder held for this command, as a context manager (another process
    writing it: ``UsageError``, exit 2)."""
    import contextlib

    from sparsepai.experiments.sweep import out_dir_lock

    stack = contextlib.ExitStack()
    try:
        stack.enter_context(out_dir_lock(out))
    except ValueError as exc:
        raise common.UsageError(str(exc)) from None
    return stack


def config(args):
    """The checked :class:`~sparsepai.experiments.sweep.SweepConfig` of the arguments (a bad one,
    or an ``--out`` folder holding other settings, is a ``UsageError`` before any work)."""
    from sparsepai.experiments.sweep import SweepConfig, check_config, check_out_dir

    common.check_model_data(args)
    cfg = SweepConfig(model=args.model, dataset=args.dataset, data_root=args.data_root,
                      methods=tuple(args.methods), sparsities=tuple(args.sparsities),
                      seeds=tuple(args.seeds), train=common.train_config(args),
                      ablations=tuple(args.ablations))
    try:
        check_config(cfg)
        check_out_dir(cfg, args.out)
    except ValueError as exc:
        raise common.UsageError(str(exc)) from None
    return cfg
