"""Pruning at initialization: ``score`` and ``prune`` over a registry of methods (one module
per method, each registering its signed saliency, or its schedule if iterative: simple.py for
random/magnitude, snip.py, grasp.py, synflow.py, force.py, prospr.py, autosparse.py;
after_training.py for the baselines that train first, with :func:`prune_after_training`
returning lottery tickets' masks and rewind weights). base.py holds what they share (prunable
weights, running any model on a batch, the one loss-and-gradients helper, the registry);
options.py checks options; methods.py discovers the method modules; thresholds come from
``sparsepai.masks.threshold``."""

from sparsepai.pruning.after_training import Tickets, prune_after_training
from sparsepai.api import prune, score
from sparsepai.core.registry import REGISTRY, prunable_names, register

__all__ = ["REGISTRY", "Tickets", "prunable_names", "prune", "prune_after_training", "register",
           "score"]
