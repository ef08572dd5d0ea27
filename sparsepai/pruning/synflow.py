"""SynFlow (Tanaka et al., NeurIPS 2020, https://arxiv.org/abs/2006.05467): data-free iterative
synaptic flow pruning. The network is made linear by taking |w| (and |buffers|), in float64 and
eval mode; the score of a weight is |w * dR/dw| for R the sum of the outputs on an all-ones
input; pruning runs over `rounds` rounds with an exponential schedule."""

from __future__ import annotations

import dataclasses

import torch
from tqdm.auto import tqdm

from sparsepai.pruning.base import register, take_batches
from sparsepai.pruning.iterative import keep_schedule, top_masks


@dataclasses.dataclass(frozen=True)
class SynflowConfig:
    """Args: rounds: pruning rounds (the paper's 100); input_shape: the shape of one input
    sample, e.g. (3, 32, 32); taken from the first batch of data when not given."""

    rounds: int = 100
    input_shape: tuple | None = None


def _linearize(model, names, data, cfg):
    if cfg.input_shape is not None:
        shape = tuple(cfg.input_shape)
    else:
        if data is None:
            raise ValueError("synflow needs input_shape=... or data to read the input shape from")
        shape = tuple(take_batches(data, 1, "synflow")[0][0].shape[1:])
    model.double().eval()
    with torch.no_grad():
        for t in model.state_dict().values():
            if t.is_floating_point():
                t.abs_()
    params = dict(model.named_parameters())
    weights = [params[n] for n in names]
    original = [w.detach().clone() for w in weights]
    device = weights[0].device
    ones = torch.ones((1,) + shape, dtype=torch.float64, device=device)
    return weights, original, ones


def _scores(model, names, weights, original, ones, masks=None):
    with torch.no_grad():
        for n, w, w0 in zip(names, weights, original):
            w.copy_(w0 if masks is None else w0 * masks[n])
    r = model(ones).sum()
    grads = torch.autograd.grad(r, weights)
    return {n: (g * w).detach().abs().float() for n, g, w in zip(names, grads, weights)}


def synflow_prune(model, names, data, loss_fn, cfg: SynflowConfig, keep: int):
    weights, original, ones = _linearize(model, names, data, cfg)
    total = sum(w.numel() for w in weights)
    masks = None
    for k in tqdm(keep_schedule(total, keep, cfg.rounds), desc="synflow rounds", leave=False):
        masks = top_masks(_scores(model, names, weights, original, ones, masks), names, k)
    return masks


@register("synflow", SynflowConfig, needs_data=False, prune=synflow_prune)
def synflow_score(model, names, data, loss_fn, cfg: SynflowConfig):
    """One round of SynFlow scores (``sp.prune`` runs all rounds)."""
    weights, original, ones = _linearize(model, names, data, cfg)
    return _scores(model, names, weights, original, ones)
