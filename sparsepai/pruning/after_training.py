"""Baselines that look at trained weights, for the comparison tables: magnitude after training
(train densely, keep the largest trained weights, rewind to the initial values) and
lottery-ticket rewinding (Frankle & Carbin, ICLR 2019, https://arxiv.org/abs/1803.03635;
Frankle et al. 2020, https://arxiv.org/abs/1912.05671): train, prune ``rate`` of the remaining
weights by trained magnitude, rewind the survivors, repeat until the target.

The masks are for the model's initial weights (rewinding to iteration 0), so ``sp.prune``
returns them like any other method's. Training uses ``data`` (one pass per epoch) and
``loss_fn``, with SGD that keeps pruned weights at zero.
"""

from __future__ import annotations

import dataclasses

import torch
from tqdm.auto import tqdm

from sparsepai.pruning.base import check_finite, register
from sparsepai.pruning.iterative import top_masks


@dataclasses.dataclass(frozen=True)
class AfterTrainingConfig:
    """Args: epochs: training epochs per round; lr, momentum, weight_decay: the SGD;
    rate: fraction of the remaining weights pruned per round (lottery tickets; 0.2 in the
    papers)."""

    epochs: int = 5
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    rate: float = 0.2


def _train(model, masks, data, loss_fn, cfg, what):
    from sparsepai.optim import MaskedSGD

    params = dict(model.named_parameters())
    opt = MaskedSGD(model.named_parameters(), masks or {}, lr=cfg.lr, momentum=cfg.momentum,
                    weight_decay=cfg.weight_decay)
    model.train()
    for _ in range(cfg.epochs):
        empty = True
        for x, y in data:
            empty = False
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x), y)
            check_finite(loss, what)
            loss.backward()
            opt.step()
        if empty:
            raise ValueError(f"{what}: data yielded no batches")
    return params


def _rounds(model, names, data, loss_fn, cfg, keep, rate):
    init = {k: v.detach().clone() for k, v in model.state_dict().items()}
    masks = None
    total = sum(dict(model.named_parameters())[n].numel() for n in names)
    current = total
    bar = tqdm(desc="train-prune-rewind rounds", leave=False)
    while current > keep:
        target = max(keep, int(round(current * (1 - rate)))) if rate < 1 else keep
        params = _train(model, masks, data, loss_fn, cfg, "after-training pruning")
        scores = {n: params[n].detach().abs() * (masks[n] if masks else 1) for n in names}
        masks = top_masks(scores, names, target)
        model.load_state_dict(init)  # rewind to iteration 0
        current = target
        bar.update()
    bar.close()
    if masks is None:  # nothing to prune (sparsity 0)
        params = dict(model.named_parameters())
        masks = {n: torch.ones_like(params[n], dtype=torch.bool) for n in names}
    return masks


def lottery_prune(model, names, data, loss_fn, cfg: AfterTrainingConfig, keep: int):
    if not 0 < cfg.rate < 1:
        raise ValueError(f"lottery: rate must be in (0, 1), got {cfg.rate}")
    return _rounds(model, names, data, loss_fn, cfg, keep, cfg.rate)


def magnitude_after_prune(model, names, data, loss_fn, cfg: AfterTrainingConfig, keep: int):
    return _rounds(model, names, data, loss_fn, cfg, keep, 1.0)


def _trained_magnitude(model, names, data, loss_fn, cfg):
    if data is None:
        raise ValueError("after-training baselines need data to train on")
    params = _train(model, None, data, loss_fn, cfg, "after-training scores")
    return {n: params[n].detach().abs() for n in names}


@register("lottery", AfterTrainingConfig, prune=lottery_prune)
def lottery_score(model, names, data, loss_fn, cfg: AfterTrainingConfig):
    """One round's scores: |w| after training the dense model (``sp.prune`` runs the rounds)."""
    return _trained_magnitude(model, names, data, loss_fn, cfg)


@register("magnitude_after_training", AfterTrainingConfig, prune=magnitude_after_prune)
def magnitude_after_score(model, names, data, loss_fn, cfg: AfterTrainingConfig):
    return _trained_magnitude(model, names, data, loss_fn, cfg)
