"""FORCE (de Jorge et al., ICLR 2021, https://arxiv.org/abs/2006.09081), iterative SNIP: at each
iteration the sensitivity |g(w0 * m) * w0| of every weight, pruned or not, is recomputed on the
currently masked network, and the top ones are kept, down to the target over an exponential
schedule. ``sp.score(..., "force")`` gives the first iteration's scores (SNIP's)."""

from __future__ import annotations

import dataclasses

import torch

from sparsepai.core.iterative import Rounds, exponential
from sparsepai.core.loss import summed_grads
from sparsepai.core.model import take_batches
from sparsepai.core.options import option
from sparsepai.core.registry import register


@dataclasses.dataclass(frozen=True)
class ForceConfig:
    """Args: iterations: pruning iterations (the paper's 10 for FORCE); batches: batches the
    gradient is summed over at each iteration."""

    iterations: int = option(10, at_least=1)
    batches: int = option(1, at_least=1)


@register("force", ForceConfig, iterative=True)
def force_schedule(model, names, data, loss_fn, cfg: ForceConfig) -> Rounds:
    batches = take_batches(data, cfg.batches, "force")
    params = dict(model.named_parameters())
    original = {n: params[n].detach().clone() for n in names}

    def saliency(masks):
        with torch.no_grad():
            for n, w0 in original.items():
                params[n].copy_(w0 if masks is None else w0 * masks[n])
        g = summed_grads(model, names, batches, loss_fn, "force")
        return {n: g[n] * original[n] for n in names}

    return Rounds(exponential(cfg.iterations), saliency)
