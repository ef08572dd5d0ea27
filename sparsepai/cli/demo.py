"""``sparsepai demo``: the main job, a sweep with the demo's defaults on the embedded digits
dataset, and one structured line: the dense model against a 90% slim one, accuracy and
training seconds side by side."""

from __future__ import annotations

from sparsepai.cli import common, sweep

HELP = "compare every method on the embedded digits dataset"
DESCRIPTION = ("The main job: every pruning method at 90/95/98/99% sparsity, a few seeds, "
               "smallconv on scikit-learn's digits, and the dense model against a slim one "
               "(structured ProsPr channels at --structured-sparsity, sp.slim): accuracy and "
               "training seconds; prints a table, writes CSV/JSON and a plot. Resumes if "
               "interrupted (same settings only).")


def add_arguments(p) -> None:
    sweep.add_arguments(p, seeds=(0, 1), out="sparsepai-demo")
    p.add_argument("--structured-sparsity", type=common.sparsity, default=0.9,
                   help="weights removed by the structured line's channel masks (0.9); 0 skips "
                        "the line")


def run(args) -> int:
    import sys

    from sparsepai.experiments.report import line_text, table, write_summary
    from sparsepai.experiments.slim_line import SlimLine, run_slim_line, summarize_line
    from sparsepai.experiments.sweep import run_sweep

    cfg = sweep.config(args)
    command = "sparsepai " + " ".join(sys.argv[1:])
    with sweep.lock(args.out):
        rows = run_sweep(cfg, args.out, command=command)
        print(table(rows, cfg))
        if args.structured_sparsity > 0:
            line = summarize_line(run_slim_line(cfg, args.out,
                                                SlimLine(sparsity=args.structured_sparsity)))
            write_summary(rows, cfg, args.out, command, structured=line)
            print("\n" + line_text(line))
    print(f"\nresults, config and plot in {args.out}/")
    return 0
