"""``sparsepai irp``: iterative rewind pruning, AutoSparse's training data; crash-safe and
resumable."""

from __future__ import annotations

import os
import time

from sparsepai.cli import common

HELP = "iterative rewind pruning: AutoSparse's training data"
DESCRIPTION = ("Train, prune a fraction of the remaining weights, rewind to initialization, "
               "repeat; records initial weights, initial gradients and how many rounds each "
               "weight survived. Crash-safe: run the same command again to resume.")


def add_arguments(p) -> None:
    common.add_model_data(p)
    p.add_argument("--rounds", type=common.positive_int, default=5, help="pruning rounds (5)")
    p.add_argument("--epochs-per-round", type=common.positive_int, default=1,
                   help="epochs per round (1)")
    p.add_argument("--prune-fraction", type=common.open_fraction, default=0.2,
                   help="fraction of the remaining weights pruned per round (0.2)")
    p.add_argument("--criterion", default="magnitude", choices=["magnitude", "snip"],
                   help="pruning criterion after training (magnitude)")
    p.add_argument("--lr", type=float, default=0.05, help="SGD learning rate (0.05)")
    p.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (0.9)")
    p.add_argument("--weight-decay", type=float, default=5e-4, help="weight decay (5e-4)")
    p.add_argument("--batch-size", type=common.positive_int, default=128,
                   help="batch size (128)")
    p.add_argument("--grad-batches", type=common.positive_int, default=None,
                   help="batches the initial gradient averages over (default: all)")
    p.add_argument("--train-seed", type=int, default=0,
                   help="seed of data order and training randomness (--seed is the init) (0)")
    p.add_argument("--out", default="sparsepai-irp", help="checkpoint/dataset folder "
                   "(sparsepai-irp); must be empty or hold this very run")
    p.add_argument("--no-resume", action="store_true",
                   help="refuse to continue a run found in --out")
    p.add_argument("--ccc", default=None, metavar="OTHER_RUN",
                   help="afterwards, report the CCC of survival scores against this other run")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args) -> int:
    from sparsepai.autosparse.ccc import ccc_report, format_report
    from sparsepai.autosparse.irp import irp

    common.check_model_data(args)
    common.check_out(args.out, folder=True)
    if args.ccc and not os.path.isdir(args.ccc):
        raise common.UsageError(f"--ccc {args.ccc}: no such folder")
    common.check_distinct([("--ccc", args.ccc)], [("--out", args.out)])
    model, (train_set, _, _) = common.model_and_data(args)
    t0 = time.perf_counter()
    ds = irp(model, train_set, rounds=args.rounds, epochs_per_round=args.epochs_per_round,
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
