"""The registry of pruning methods: :func:`register` (a method module registers its saliency,
or its schedule if iterative) and :func:`get_method`, which finds a method by name.

The methods themselves live in ``sparsepai.pruning`` (one module per method); ``get_method``
imports that package's ``methods`` module once, by name, the registry's plugin discovery, so
this module imports no method module."""

from __future__ import annotations

import dataclasses
import importlib
from typing import Callable

import torch

from sparsepai.core.iterative import prune_rounds

@dataclasses.dataclass(frozen=True)
class Method:
    """A registered pruning method.

    ``saliency(model, names, data, loss_fn, config) -> {name: Tensor}`` is the method's signed
    saliency of every named weight, on a private copy of the user's model; the score (higher =
    keep) is its magnitude, or the saliency itself when ``absolute`` is False. An iterative
    method registers ``schedule(model, names, data, loss_fn, config) -> rounds`` instead, an
    object with ``counts(total, keep) -> [kept count per round]`` and ``saliency(masks) ->
    {name: Tensor}`` (the saliency on the network masked by the previous round, None first);
    its one-shot saliency is the first round's.

    ``in_place``: the method never changes a weight, so it scores the user's model itself
    (:func:`~sparsepai.core.model.scoring_model` restores what scoring touches) instead of a
    private copy. ``sum_magnitudes``: a channel's score (structured pruning) sums the per-weight
    magnitudes (magnitude: the filter's L1 norm) instead of taking the magnitude of the summed
    saliency.
    """

    name: str
    config: type
    saliency: Callable
    schedule: Callable | None = None
    absolute: bool = True
    in_place: bool = False
    sum_magnitudes: bool = False

    def scores(self, saliency: dict) -> dict:
        """Scores (higher = keep) from signed saliencies."""
        return {n: s.abs() if self.absolute else s for n, s in saliency.items()}

    def masks(self, model, names, data, loss_fn, config, keep: int, threshold) -> dict:
        """Keep-masks for ``keep`` weights: one ``threshold(scores, keep)`` of the scores, or
        one per round of the schedule (every round thresholded the same way). A one-shot
        method's magnitudes are ranked by the top-k op from the signed saliencies
        (``transform="abs"``): no score tensors beyond the saliencies."""
        if self.schedule is None:
            sal = self.saliency(model, names, data, loss_fn, config)
            return threshold(sal, keep, transform="abs" if self.absolute else "none")
        rounds = self.schedule(model, names, data, loss_fn, config)
        params = dict(model.named_parameters())
        masks = prune_rounds(rounds.counts(sum(params[n].numel() for n in names), keep),
                             lambda r, current: self.scores(rounds.saliency(current)), threshold)
        if masks is None:  # no round ran
            masks = {n: torch.ones_like(params[n], dtype=torch.bool) for n in names}
        return masks


REGISTRY: dict[str, Method] = {}


def register(name: str, config: type, *, iterative: bool = False, absolute: bool = True,
             in_place: bool = False, sum_magnitudes: bool = False):
    """Decorator registering a method's saliency function (or, ``iterative``, its schedule
    function) under ``name``; ``in_place`` and ``sum_magnitudes`` as :class:`Method` has them."""

    def deco(fn):
        if iterative:
            def first_round(model, names, data, loss_fn, cfg):
                return fn(model, names, data, loss_fn, cfg).saliency(None)

            REGISTRY[name] = Method(name, config, first_round, fn, absolute, in_place,
                                    sum_magnitudes)
        else:
            REGISTRY[name] = Method(name, config, fn, None, absolute, in_place, sum_magnitudes)
        return fn

    return deco


def get_method(name: str) -> Method:
    importlib.import_module("sparsepai.pruning.methods")  # registers them
    if not isinstance(name, str) or name not in REGISTRY:
        raise ValueError(f"unknown pruning method {name!r}; valid methods: "
                         f"{', '.join(sorted(REGISTRY))}")
    return REGISTRY[name]
