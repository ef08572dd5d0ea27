"""Shared piece of the iterative methods: the exponential keep schedule and thresholding."""

from __future__ import annotations


def keep_schedule(total: int, keep: int, rounds: int) -> list[int]:
    """Kept counts after each round: total * density**(k / rounds), ending exactly at keep."""
    density = keep / total if total else 0.0
    out = [int(round(total * density ** (k / rounds))) for k in range(1, rounds + 1)]
    out[-1] = keep
    return [max(keep, k) for k in out]


def top_masks(scores: dict, names, keep: int) -> dict:
    from sparsepai.ops.topk import topk_mask

    res = topk_mask([scores[n].detach() for n in names], keep, nan="low")
    return dict(zip(names, res.masks))
