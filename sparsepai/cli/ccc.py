"""``sparsepai ccc``: concordance of the survival scores of two IRP runs."""

from __future__ import annotations

import json

HELP = "concordance (CCC) of two IRP runs' survival scores"
DESCRIPTION = ("Lin's concordance correlation coefficient between the survival scores of two "
               "finished IRP runs, overall and per layer.")


def add_arguments(p) -> None:
    p.add_argument("run_a", help="first IRP run folder")
    p.add_argument("run_b", help="second IRP run folder (same model)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args) -> int:
    from sparsepai.autosparse.ccc import ccc_report, format_report

    rep = ccc_report(args.run_a, args.run_b)
    print(json.dumps(rep, indent=1) if args.json else format_report(rep))
    return 0
