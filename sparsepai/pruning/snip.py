"""SNIP (Lee et al., ICLR 2019, https://arxiv.org/abs/1810.02340): connection sensitivity
|g * w| at initialization."""

from __future__ import annotations

import dataclasses

import torch

from sparsepai.pruning.base import check_finite, register, take_batches


@dataclasses.dataclass(frozen=True)
class SnipConfig:
    """Args: batches: how many batches the gradient is summed over."""

    batches: int = 1


def grads_at(model, names, batches, loss_fn, what):
    """Sum over batches of dL/dw for the named weights (the model's own parameters)."""
    params = dict(model.named_parameters())
    total = {n: torch.zeros_like(params[n]) for n in names}
    for x, y in batches:
        loss = loss_fn(model(x), y)
        check_finite(loss, what)
        gs = torch.autograd.grad(loss, [params[n] for n in names])
        for n, g in zip(names, gs):
            total[n] += g
    return total


@register("snip", SnipConfig)
def snip_score(model, names, data, loss_fn, cfg: SnipConfig):
    batches = take_batches(data, cfg.batches, "snip")
    g = grads_at(model, names, batches, loss_fn, "snip")
    params = dict(model.named_parameters())
    return {n: (g[n] * params[n].detach()).abs() for n in names}
