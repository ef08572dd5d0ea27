"""The one training loop: :func:`train_pass`, one pass of optimizer steps over batches. The
recipes (``sparsepai.experiments.train``), the after-training baselines
(``sparsepai/pruning/after_training.py``) and IRP (``sparsepai/autosparse/irp.py``) all step
through it. :func:`loader` batches a dataset reproducibly."""

from __future__ import annotations

import dataclasses

import torch

from sparsepai.core.loss import batch_loss


@dataclasses.dataclass(frozen=True)
class PassStats:
    """What one :func:`train_pass` saw.

    Args:
        loss_sum: sum over the trained batches of the mean batch loss times the batch size.
        samples: samples trained on (skipped batches not counted).
        batches: batches drawn from the iterable, skipped ones included.
    """

    loss_sum: float
    samples: int
    batches: int

    @property
    def mean_loss(self) -> float:
        """The mean loss per trained sample (0 when nothing was trained)."""
        return self.loss_sum / max(1, self.samples)


def train_pass(model: torch.nn.Module, opt: torch.optim.Optimizer, batches, loss_fn, what: str,
               *, skip: int = 0, before_batch=None) -> PassStats:
    """One pass of ``opt`` steps over ``batches``, the model as it is (the caller sets train
    mode).

    Args:
        model: the network, stepped in place.
        opt: its optimizer (a masked one keeps pruned weights at zero).
        batches: an iterable of ``(inputs, targets)``; inputs as for ``sp.score`` (tensor, tuple
            or dict), targets a tensor whose first dimension is the batch size.
        loss_fn: ``loss_fn(logits, targets)`` -> scalar tensor, mean over the batch.
        what: names the caller in errors (a non-finite loss raises ``FloatingPointError``, an
            empty ``batches`` ``ValueError``).
        skip: draw but do not train the first ``skip`` batches (a run resumed at an iteration).
        before_batch: ``before_batch(i)`` is called before the i-th batch drawn (0-based,
            skipped ones included), e.g. to record the model at an iteration.

    Returns:
        :class:`PassStats`.
    """
    total, samples, seen = 0.0, 0, 0
    for x, y in batches:
        if before_batch is not None:
            before_batch(seen)
        seen += 1
        if seen <= skip:
            continue
        opt.zero_grad(set_to_none=True)
        loss = batch_loss(model, (x, y), loss_fn, what)
        loss.backward()
        opt.step()
        total += loss.item() * len(y)
        samples += len(y)
    if seen == 0:
        raise ValueError(f"{what}: data yielded no batches")
    return PassStats(total, samples, seen)


def loader(dataset, batch_size: int, shuffle: bool, seed: int = 0):
    """A DataLoader whose shuffling is reproducible from ``seed``."""
    g = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=shuffle,
                                       generator=g, drop_last=False)
