"""What the iterative methods share: their rounds (kept counts, and the saliency on the network
the previous round masked) and the exponential schedule of SynFlow and FORCE."""

from __future__ import annotations

import dataclasses
from typing import Callable


@dataclasses.dataclass(frozen=True)
class Rounds:
    """An iterative method's schedule (see :class:`~sparsepai.pruning.base.Method`).

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
