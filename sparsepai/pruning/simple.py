"""Data-free baselines: random and magnitude scores."""

from __future__ import annotations

import dataclasses

import torch

from sparsepai.pruning.base import register


@dataclasses.dataclass(frozen=True)
class RandomConfig:
    """Random scores (uniform), reproducible from ``seed``."""

    seed: int = 0


@register("random", RandomConfig, needs_data=False)
def random_score(model, names, data, loss_fn, cfg: RandomConfig):
    g = torch.Generator().manual_seed(cfg.seed)
    params = dict(model.named_parameters())
    return {n: torch.rand(params[n].shape, generator=g).to(params[n].device) for n in names}


@dataclasses.dataclass(frozen=True)
class MagnitudeConfig:
    """|w| at initialization."""


@register("magnitude", MagnitudeConfig, needs_data=False)
def magnitude_score(model, names, data, loss_fn, cfg: MagnitudeConfig):
    params = dict(model.named_parameters())
    return {n: params[n].detach().abs() for n in names}
