"""What the iterative methods share: their rounds (kept counts, and the saliency on the network
the previous round masked) and the exponential schedule of SynFlow and FORCE."""

from __future__ import annotations

import dataclasses
from typing import Callable


@dataclasses.dataclass(frozen=True)
class Rounds:
    """An iterative method's schedule (see :class:`~sparsepai.core.registry.Method`).

    Args:
        counts: ``counts(total, keep) -> [kept count after each round]``, ending at ``keep``.
        saliency: ``saliency(masks) -> {name: signed saliency}`` on the network masked by the
            previous round (``None``: unmasked).
    """

    counts: Callable
    saliency: Callable


def keep_schedule(total: int, keep: int, rounds: int) -> list[int]:
    """Kept counts after each round: total * density**(k / rounds), ending exactly at keep."""
    density = keep / total if total else 0.0
    out = [int(round(total * density ** (k / rounds))) for k in range(1, rounds + 1)]
    out[-1] = keep
    return [max(keep, k) for k in out]


def exponential(rounds: int) -> Callable:
    """``counts`` for :class:`Rounds`: :func:`keep_schedule` over ``rounds`` rounds."""
    return lambda total, keep: keep_schedule(total, keep, rounds)


def prune_rounds(counts, scores_under: Callable, threshold: Callable, *, masks=None,
                 first: int = 1, on_round: Callable | None = None):
    """The one iterative pruning engine: the schedules of FORCE and SynFlow
    (:meth:`~sparsepai.core.registry.Method.masks`), lottery tickets' train-prune-rewind
    (``sparsepai/pruning/after_training.py``) and IRP (``sparsepai/autosparse/irp.py``, with a
    checkpointing ``on_round``). Round r scores the network under the previous round's masks
    and keeps the best ``counts[r - 1]`` entries.

    Args:
        counts: the kept count after each round, from round 1.
        scores_under: ``scores_under(r, masks) -> {name: score}`` (higher = keep) on the network
            under ``masks`` (None: dense, before round 1); training and rewinding, where a
            method has them, happen in it.
        threshold: ``threshold(scores, keep) -> {name: bool mask}``.
        masks: the masks after round ``first - 1`` (a resumed run), None to start dense.
        first: the first round to run (1-based).
        on_round: ``on_round(r, masks)`` after every round (recording, checkpointing).

    Returns:
        The masks after the last round (``masks`` as given when no round runs).
    """
    for r in range(first, len(counts) + 1):
        masks = threshold(scores_under(r, masks), counts[r - 1])
        if on_round is not None:
            on_round(r, masks)
    return masks
