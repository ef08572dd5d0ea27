"""Pruning at initialization: ``score`` and ``prune`` over a registry of methods (one module
per method: simple.py for random/magnitude, snip.py, grasp.py, synflow.py, force.py, autosparse.py,
prospr.py)."""

from sparsepai.pruning.api import prune, score
from sparsepai.pruning.base import REGISTRY, prunable_names, register

__all__ = ["REGISTRY", "prunable_names", "prune", "register", "score"]
