"""Training and evaluation of a (masked) network for the recipes and the command line:
:func:`train` steps through the one training loop, ``sparsepai.core.train.train_pass``."""

from __future__ import annotations

import dataclasses
import time

import torch
from tqdm.auto import tqdm

# PassStats and train_pass: the one training loop, imported here by callers of the recipes
from sparsepai.core.train import PassStats, loader, train_pass  # noqa: F401
from sparsepai.masks.apply import apply_masks
from sparsepai.optim.masked import MaskedAdamW, MaskedSGD

OPTIMIZERS = ("sgd", "adamw")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Args: epochs, batch_size; optimizer: "sgd" (momentum) or "adamw"; lr, momentum,
    weight_decay; cosine: cosine learning-rate decay to 0 over the epochs; seed: data order;
    sparse_kernels: run the masked layers on the unstructured-sparse kernels where they measure
    faster on the first batch (``sp.sparsify``; the model then holds the report)."""

    epochs: int = 20
    batch_size: int = 128
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    cosine: bool = True
    seed: int = 0
    sparse_kernels: bool = False

    def __post_init__(self):
        for name in ("epochs", "batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"TrainConfig: {name} must be an int >= 1, got {v!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"TrainConfig: optimizer must be one of {OPTIMIZERS}, got "
                             f"{self.optimizer!r}")
        if not self.lr > 0:
            raise ValueError(f"TrainConfig: lr must be > 0, got {self.lr!r}")




@torch.no_grad()
def evaluate(model: torch.nn.Module, dataset, batch_size: int = 512) -> float:
    """Top-1 accuracy (fraction) of ``model`` on ``dataset``."""
    was = model.training
    model.eval()
    correct = total = 0
    for x, y in loader(dataset, batch_size, shuffle=False):
        correct += int((model(x).argmax(1) == y).sum())
        total += len(y)
    model.train(was)
    return correct / max(1, total)


def train_epochs(model: torch.nn.Module, masks, train_set, test_set, cfg: TrainConfig):
    """:func:`train` one epoch at a time: a generator that trains an epoch, evaluates, and
    yields ``{"epoch", "train_loss", "test_acc", "train_seconds", "step_seconds",
    "setup_seconds"}`` (``train_seconds``: the wall-clock time spent training, data loading and
    optimizer steps but not evaluation, up to the end of this epoch; ``step_seconds``: this
    epoch's time per batch, a list; ``setup_seconds``: the time before the first epoch, applying
    the masks and, with ``cfg.sparse_kernels``, ``sp.sparsify``'s measurements). Several models
    can so be trained in lockstep, epoch by epoch (the time-to-accuracy benchmark does, so that
    a change of machine load hits them alike)."""
    setup = time.perf_counter()
    if masks:
        apply_masks(model, masks)
    wmasks = masks or {}
    if masks and cfg.sparse_kernels:
        from sparsepai.sparse.sparsify import sparsify

        first = next(iter(loader(train_set, cfg.batch_size, shuffle=True, seed=cfg.seed)))[0]
        sparsify(model, masks, example_inputs=first)
        # a swapped layer's kept weights are its whole parameter: nothing left to mask there
        names = dict(model.named_parameters())
        wmasks = {k: m for k, m in masks.items() if k in names}
    params = model.named_parameters()
    if cfg.optimizer == "sgd":
        opt = MaskedSGD(params, wmasks, lr=cfg.lr, momentum=cfg.momentum,
                        weight_decay=cfg.weight_decay)
    else:  # TrainConfig checked the name
        opt = MaskedAdamW(params, wmasks, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = (torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs)
             if cfg.cosine else None)
    setup = time.perf_counter() - setup
    seconds = 0.0
    for epoch in range(cfg.epochs):
        model.train()  # evaluate() restores it too; set here so that nothing is timed twice
        stamps = [time.perf_counter()]
        stats = train_pass(model, opt,
                           loader(train_set, cfg.batch_size, shuffle=True, seed=cfg.seed + epoch),
                           torch.nn.functional.cross_entropy, f"train epoch {epoch}",
                           before_batch=lambda i: i and stamps.append(time.perf_counter()))
        if sched:
            sched.step()
        stamps.append(time.perf_counter())
        seconds += stamps[-1] - stamps[0]
        yield {"epoch": epoch, "train_loss": stats.mean_loss,
               "test_acc": evaluate(model, test_set), "train_seconds": seconds,
               "step_seconds": [b - a for a, b in zip(stamps, stamps[1:])],
               "setup_seconds": setup}


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
        ``{"test_acc": float, "train_loss": [per epoch], "test_acc_curve": [per epoch],
        "train_seconds": [per epoch]}`` (see :func:`train_epochs`).
    """
    losses, curve, seconds = [], [], []
    bar = tqdm(train_epochs(model, masks, train_set, test_set, cfg), total=cfg.epochs,
               desc="train", leave=False, disable=not progress)
    for e in bar:
        losses.append(e["train_loss"])
        curve.append(e["test_acc"])
        seconds.append(e["train_seconds"])
        bar.set_postfix(loss=f"{losses[-1]:.3f}", acc=f"{curve[-1]:.3f}")
    return {"test_acc": curve[-1], "train_loss": losses, "test_acc_curve": curve,
            "train_seconds": seconds}
