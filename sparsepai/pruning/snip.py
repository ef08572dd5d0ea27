"""SNIP (Lee et al., ICLR 2019, https://arxiv.org/abs/1810.02340): connection sensitivity
|g * w| at initialization; the signed saliency is g * w."""

from __future__ import annotations

import dataclasses

from sparsepai.core.loss import summed_grads
from sparsepai.core.model import take_batches
from sparsepai.core.options import option
from sparsepai.core.registry import register


@dataclasses.dataclass(frozen=True)
class SnipConfig:
    """Args: batches: how many batches the gradient is summed over."""

    batches: int = option(1, at_least=1)


@register("snip", SnipConfig, in_place=True)
def snip_saliency(model, names, data, loss_fn, cfg: SnipConfig):
    """g * w, computed in the gradients' own buffers (no other full-size tensor)."""
    batches = take_batches(data, cfg.batches, "snip")
    g = summed_grads(model, names, batches, loss_fn, "snip")
    params = dict(model.named_parameters())
    return {n: g[n].mul_(params[n].detach()) for n in names}
