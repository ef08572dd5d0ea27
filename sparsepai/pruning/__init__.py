"""Pruning at initialization: a registry of methods (one module per method, each registering
its signed saliency, or its schedule if iterative: simple.py for random/magnitude, snip.py,
grasp.py, synflow.py, force.py, prospr.py, autosparse.py; after_training.py for the baselines
that train first, with :func:`prune_after_training` returning lottery tickets' masks and rewind
weights), and ``unstructured.py``: scores and keep-masks in one process. What the methods share
(prunable weights, the model call, the loss and its gradients, the registry, options) is
:mod:`sparsepai.core`; methods.py discovers the method modules; thresholds come from
``sparsepai.masks.threshold``. ``sp.score``/``sp.prune`` (:mod:`sparsepai.api`) compose these
with structured and distributed pruning."""

from sparsepai.core.prunable import prunable_names
from sparsepai.core.registry import REGISTRY, register
from sparsepai.pruning.after_training import Tickets, prune_after_training
from sparsepai.pruning.unstructured import prune_weights, score_weights

__all__ = ["REGISTRY", "Tickets", "prunable_names", "prune_after_training", "prune_weights",
           "register", "score_weights"]
