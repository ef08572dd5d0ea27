"""Pruning-at-initialization sweep on real data: LeNet-5 on the MNIST test split
(../shared/data/mnist: the first 8,000 images train, the last 2,000 evaluate), every method at
90/95/98/99/99.5% sparsity, several seeds, beside the baselines that train first: magnitude
after training and lottery tickets (20% per round, rewound to initialization and to an early
iteration). Resumable (rerun the same command after a crash).

    python benchmarks/bench_prune_mnist.py      # -> benchmarks/results/prune_mnist/

Writes runs.jsonl (one line per run), results.{csv,json} (with the command), table.txt,
accuracy_vs_sparsity.png and config.json.

The after-training baselines make one train-prune-rewind run per seed (``--round-epochs``
epochs per round, SGD lr 0.05, momentum 0.9, weight decay 5e-4, the pruning loader's batches of
128) whose rounds pass through every sparsity, then every sparsity's ticket trains like the
other methods (8 epochs, cosine), from the rewind weights.
"""

from __future__ import annotations

import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from sparsepai.experiments.report import table, write_summary  # noqa: E402
from sparsepai.experiments.sweep import (  # noqa: E402
    AFTER_TRAINING,
    ALL_METHODS,
    SweepConfig,
    load_rows,
    run_sweep,
)
from sparsepai.experiments.train import TrainConfig  # noqa: E402

REWOUND = "lottery_rewind"  # the lottery rewound to iteration --rewind-iteration


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", default=os.path.join(HERE, "..", "..", "shared", "data", "mnist"))
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--sparsities", nargs="+", type=float, default=[0.9, 0.95, 0.98, 0.99, 0.995])
    ap.add_argument("--methods", nargs="+", default=list(ALL_METHODS + AFTER_TRAINING) + [REWOUND])
    ap.add_argument("--round-epochs", type=int, default=4,
                    help="training epochs per train-prune round of the after-training baselines")
    ap.add_argument("--rewind-iteration", type=int, default=25,
                    help=f"the optimizer step {REWOUND} rewinds to (63 steps per epoch)")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "prune_mnist"))
    ap.add_argument("--summarize", action="store_true",
                    help="run nothing: rewrite the table, CSV/JSON and plot from runs.jsonl (after "
                    "stopping a sweep early)")
    args = ap.parse_args()
    if not os.path.isdir(args.data_root):
        raise SystemExit(f"MNIST IDX files not found in {args.data_root}")
    rounds = {"epochs": args.round_epochs, "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4}
    options = tuple((m, m, rounds) for m in AFTER_TRAINING)
    options += ((REWOUND, "lottery", dict(rounds, rewind_iteration=args.rewind_iteration)),)
    cfg = SweepConfig(model="lenet5", dataset="mnist", data_root=os.path.abspath(args.data_root),
                      methods=tuple(args.methods), sparsities=tuple(args.sparsities),
                      seeds=tuple(args.seeds),
                      train=TrainConfig(epochs=args.epochs, batch_size=128, lr=0.05),
                      method_options=options)
    command = " ".join(["python", os.path.relpath(sys.argv[0])] + sys.argv[1:])
    if args.summarize:
        rows = load_rows(os.path.join(args.out, "runs.jsonl"))
        write_summary(rows, cfg, args.out, command)
    else:
        rows = run_sweep(cfg, args.out, command=command)
    print(table(rows, cfg))


if __name__ == "__main__":
    main()
