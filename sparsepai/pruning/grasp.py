"""GraSP (Wang et al., ICLR 2020, https://arxiv.org/abs/2002.07376): keep the weights whose
removal would most reduce gradient flow. The paper removes the weights with the largest
S(-w) = -w * Hg; our scores are "higher = keep", so a weight's score is w * Hg."""

from __future__ import annotations

import dataclasses

import torch

from sparsepai.pruning.base import check_finite, register, take_batches


@dataclasses.dataclass(frozen=True)
class GraspConfig:
    """Args: temperature: logits are divided by it (the paper's T = 200); batches: how many
    batches the gradient and Hessian-gradient product are summed over."""

    temperature: float = 200.0
    batches: int = 1


@register("grasp", GraspConfig)
def grasp_score(model, names, data, loss_fn, cfg: GraspConfig):
    batches = take_batches(data, cfg.batches, "grasp")
    params = dict(model.named_parameters())
    weights = [params[n] for n in names]
    # g: the (constant) gradient
    g = [torch.zeros_like(w) for w in weights]
    for x, y in batches:
        loss = loss_fn(model(x) / cfg.temperature, y)
        check_finite(loss, "grasp")
        for acc, gi in zip(g, torch.autograd.grad(loss, weights)):
            acc += gi
    # Hg = d(g_const . grad L)/dw
    hg = [torch.zeros_like(w) for w in weights]
    for x, y in batches:
        loss = loss_fn(model(x) / cfg.temperature, y)
        grads = torch.autograd.grad(loss, weights, create_graph=True)
        z = sum((gi * c).sum() for gi, c in zip(grads, g))
        for acc, h in zip(hg, torch.autograd.grad(z, weights)):
            acc += h
    return {n: (w.detach() * h) for n, w, h in zip(names, weights, hg)}
