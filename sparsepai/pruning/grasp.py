"""GraSP (Wang et al., ICLR 2020, https://arxiv.org/abs/2002.07376): keep the weights whose
removal would most reduce gradient flow. The paper removes the weights with the largest
S(-w) = -w * Hg; our scores are "higher = keep", so a weight's score is w * Hg (signed: the
saliency is the score)."""

from __future__ import annotations

import dataclasses

import torch

from sparsepai.core.loss import loss_grads, summed_grads
from sparsepai.core.model import take_batches
from sparsepai.core.options import option
from sparsepai.core.registry import register
from sparsepai.pruning.second_order import second_order


@dataclasses.dataclass(frozen=True)
class GraspConfig:
    """Args: temperature: logits are divided by it (the paper's T = 200); batches: how many
    batches the gradient and Hessian-gradient product are summed over."""

    temperature: float = option(200.0, above=0)
    batches: int = option(1, at_least=1)


@register("grasp", GraspConfig, absolute=False, in_place=True)
def grasp_saliency(model, names, data, loss_fn, cfg: GraspConfig):
    batches = take_batches(data, cfg.batches, "grasp")

    def tempered(logits, targets):
        return loss_fn(logits / cfg.temperature, targets)

    params = dict(model.named_parameters())
    weights = [params[n] for n in names]
    with second_order():
        g = summed_grads(model, names, batches, tempered, "grasp")  # held constant below
        # Hg = d(g_const . grad L)/dw
        hg = [torch.zeros_like(w) for w in weights]
        for b in batches:
            grads = loss_grads(model, weights, b, tempered, "grasp", create_graph=True)
            z = sum((gi * g[n]).sum() for gi, n in zip(grads, names))
            for acc, h in zip(hg, torch.autograd.grad(z, weights, materialize_grads=True)):
                acc += h
    return {n: w.detach() * h for n, w, h in zip(names, weights, hg)}
