"""``sparsepai demo``: the main job, a sweep with the demo's defaults on the embedded digits
dataset."""

from __future__ import annotations

from sparsepai.cli import sweep

HELP = "compare every method on the embedded digits dataset"
DESCRIPTION = ("The main job: every pruning method at 90/95/98/99% sparsity, a few seeds, "
               "smallconv on scikit-learn's digits; prints a table, writes CSV/JSON and a plot. "
               "Resumes if interrupted (same settings only).")


def add_arguments(p) -> None:
    sweep.add_arguments(p, seeds=(0, 1), out="sparsepai-demo")


run = sweep.run
