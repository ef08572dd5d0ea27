"""Training and evaluation of a (masked) network: the loop the experiments share."""

from __future__ import annotations

import dataclasses

import torch
from tqdm.auto import tqdm


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Args: epochs, batch_size; optimizer: "sgd" (momentum) or "adamw"; lr, momentum,
    weight_decay; cosine: cosine learning-rate decay to 0 over the epochs; seed: data order."""

    epochs: int = 20
    batch_size: int = 128
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    cosine: bool = True
    seed: int = 0


@torch.no_grad()
def evaluate(model: torch.nn.Module, dataset, batch_size: int = 512) -> float:
    """Top-1 accuracy (fraction) of ``model`` on ``dataset``."""
    from sparsepai.data import loader

    was = model.training
    model.eval()
    correct = total = 0
    for x, y in loader(dataset, batch_size, shuffle=False):
        correct += int((model(x).argmax(1) == y).sum())
        total += len(y)
    model.train(was)
    return correct / max(1, total)


def train(model: torch.nn.Module, masks, train_set, test_set, cfg: TrainConfig,
          progress: bool = True) -> dict:
    """Train ``model`` in place with its pruned weights held at zero.

    Args:
        model: the network (masks are applied to it first).
        masks: ``{param name: bool mask}`` or None (dense).
        train_set, test_set: datasets of ``(image, label)``.
        cfg: :class:`TrainConfig`.
        progress: show a progress bar over epochs.

    Returns:
        ``{"test_acc": float, "train_loss": [per epoch], "test_acc_curve": [per epoch]}``.
    """
    import sparsepai as sp
    from sparsepai.data import loader

    if masks:
        sp.apply_masks(model, masks)
    params = model.named_parameters()
    wmasks = masks or {}
    if cfg.optimizer == "sgd":
        opt = sp.optim.MaskedSGD(params, wmasks, lr=cfg.lr, momentum=cfg.momentum,
                                 weight_decay=cfg.weight_decay)
    elif cfg.optimizer == "adamw":
        opt = sp.optim.MaskedAdamW(params, wmasks, lr=cfg.lr, weight_decay=cfg.weight_decay)
    else:
        raise ValueError(f"optimizer must be 'sgd' or 'adamw', got {cfg.optimizer!r}")
    sched = (torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, cfg.epochs))
             if cfg.cosine else None)
    losses, curve = [], []
    bar = tqdm(range(cfg.epochs), desc="train", leave=False, disable=not progress)
    model.train()
    for epoch in bar:
        total, n = 0.0, 0
        for x, y in loader(train_set, cfg.batch_size, shuffle=True, seed=cfg.seed + epoch):
            opt.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(model(x), y)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"train: loss is {loss.item()} at epoch {epoch}")
            loss.backward()
            opt.step()
            total += loss.item() * len(y)
            n += len(y)
        if sched:
            sched.step()
        losses.append(total / max(1, n))
        curve.append(evaluate(model, test_set))
        bar.set_postfix(loss=f"{losses[-1]:.3f}", acc=f"{curve[-1]:.3f}")
    return {"test_acc": curve[-1] if curve else evaluate(model, test_set),
            "train_loss": losses, "test_acc_curve": curve}
