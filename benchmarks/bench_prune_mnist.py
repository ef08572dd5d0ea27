"""Pruning-at-initialization sweep on real data: LeNet-5 on the MNIST test split
(../shared/data/mnist: the first 8,000 images train, the last 2,000 evaluate), every method at
90/95/98/99/99.5% sparsity, several seeds. Resumable (rerun the same command after a crash).

    python benchmarks/bench_prune_mnist.py      # -> benchmarks/results/prune_mnist/

Writes runs.jsonl (one line per run), results.{csv,json}, table.txt, accuracy_vs_sparsity.png
and config.json.
"""

from __future__ import annotations

import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from sparsepai.experiment import ALL_METHODS, SweepConfig, run_sweep, table  # noqa: E402
from sparsepai.train import TrainConfig  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", default=os.path.join(HERE, "..", "..", "shared", "data", "mnist"))
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--sparsities", nargs="+", type=float, default=[0.9, 0.95, 0.98, 0.99, 0.995])
    ap.add_argument("--methods", nargs="+", default=list(ALL_METHODS))
    ap.add_argument("--out", default=os.path.join(HERE, "results", "prune_mnist"))
    args = ap.parse_args()
    if not os.path.isdir(args.data_root):
        raise SystemExit(f"MNIST IDX files not found in {args.data_root}")
    cfg = SweepConfig(model="lenet5", dataset="mnist", data_root=os.path.abspath(args.data_root),
                      methods=tuple(args.methods), sparsities=tuple(args.sparsities),
                      seeds=tuple(args.seeds),
                      train=TrainConfig(epochs=args.epochs, batch_size=128, lr=0.05))
    rows = run_sweep(cfg, args.out)
    print(table(rows, cfg))


if __name__ == "__main__":
    main()
