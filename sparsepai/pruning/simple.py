"""Data-free baselines: random and magnitude scores."""

from __future__ import annotations

import dataclasses

import torch

from sparsepai.core.registry import register


@dataclasses.dataclass(frozen=True)
class RandomConfig:
    """Random scores (uniform), reproducible from ``seed``."""

    seed: int = 0


@register("random", RandomConfig, absolute=False, in_place=True)
def random_saliency(model, names, data, loss_fn, cfg: RandomConfig):
    g = torch.Generator().manual_seed(cfg.seed)
    params = dict(model.named_parameters())
    return {n: torch.rand(params[n].shape, generator=g).to(params[n].device) for n in names}


@dataclasses.dataclass(frozen=True)
class MagnitudeConfig:
    """|w| at initialization."""


@register("magnitude", MagnitudeConfig, in_place=True, sum_magnitudes=True)
def magnitude_saliency(model, names, data, loss_fn, cfg: MagnitudeConfig):
    """The weights themselves (detached, no copy): the score is |w|, which the top-k op ranks
    from w directly (``transform="abs"``); a channel's score sums |w| (the filter's L1 norm)."""
    params = dict(model.named_parameters())
    return {n: params[n].detach() for n in names}
