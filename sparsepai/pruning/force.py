"""FORCE / iterative SNIP (de Jorge et al., ICLR 2021, https://arxiv.org/abs/2006.09081):
progressive pruning in which pruned weights keep receiving gradients: at each iteration the
connection sensitivity |w0 * dL/d(w0 * m)| of every weight, pruned or not, is recomputed on the
currently masked network, and the top ones are kept, down to the target over an exponential
schedule. ``sp.score(..., "force")`` gives the first iteration's scores (SNIP's)."""

from __future__ import annotations

import dataclasses

import torch
from tqdm.auto import tqdm

from sparsepai.pruning.base import register, take_batches
from sparsepai.pruning.iterative import keep_schedule, top_masks
from sparsepai.pruning.snip import grads_at


@dataclasses.dataclass(frozen=True)
class ForceConfig:
    """Args: iterations: pruning iterations (the paper's 10 for FORCE); batches: batches the
    gradient is summed over at each iteration."""

    iterations: int = 10
    batches: int = 1


def _sensitivity(model, names, batches, loss_fn, original, masks):
    params = dict(model.named_parameters())
    with torch.no_grad():
        for n, w0 in zip(names, original):
            params[n].copy_(w0 if masks is None else w0 * masks[n])
    g = grads_at(model, names, batches, loss_fn, "force")
    return {n: (g[n] * w0).abs() for n, w0 in zip(names, original)}


def force_prune(model, names, data, loss_fn, cfg: ForceConfig, keep: int):
    batches = take_batches(data, cfg.batches, "force")
    params = dict(model.named_parameters())
    original = [params[n].detach().clone() for n in names]
    total = sum(w.numel() for w in original)
    masks = None
    for k in tqdm(keep_schedule(total, keep, cfg.iterations), desc="force iterations",
                  leave=False):
        masks = top_masks(_sensitivity(model, names, batches, loss_fn, original, masks), names, k)
    return masks


@register("force", ForceConfig, prune=force_prune)
def force_score(model, names, data, loss_fn, cfg: ForceConfig):
    batches = take_batches(data, cfg.batches, "force")
    params = dict(model.named_parameters())
    original = [params[n].detach().clone() for n in names]
    return _sensitivity(model, names, batches, loss_fn, original, None)
