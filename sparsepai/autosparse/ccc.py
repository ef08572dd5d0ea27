"""The consistency check of AutoSparse (https://arxiv.org/abs/2408.14757): Lin's concordance
correlation coefficient between the survival scores of two independent IRP runs."""

from __future__ import annotations

import torch

from sparsepai.autosparse.dataset import IRPDataset


def _flat(x, names=None) -> torch.Tensor:
    if isinstance(x, dict):
        return torch.cat([x[n].reshape(-1).double() for n in names])
    return torch.as_tensor(x).reshape(-1).double()


def ccc(a, b) -> float:
    """Lin's concordance correlation coefficient (Lin 1989),

        ccc = 2 cov(a, b) / (var(a) + var(b) + (mean(a) - mean(b))**2),

    with population (1/N) moments, in float64. 1 = identical, 0 = no agreement, -1 = reversed.

    Args:
        a, b: tensors (any shapes, the same number of elements) or dicts of tensors over the same
            keys (then every tensor of a is paired with the tensor of b under its key).

    Returns:
        The coefficient (float); NaN if both inputs are constant and equal.
    """
    if isinstance(a, dict) != isinstance(b, dict):
        raise TypeError("ccc: pass two tensors or two dicts of tensors")
    names = None
    if isinstance(a, dict):
        if set(a) != set(b):
            raise ValueError(f"ccc: the dicts name different tensors: "
                             f"{sorted(set(a) ^ set(b))[:5]}")
        names = sorted(a)
        for n in names:
            if a[n].shape != b[n].shape:
                raise ValueError(f"ccc: {n!r} has shape {tuple(a[n].shape)} and "
                                 f"{tuple(b[n].shape)}")
    x, y = _flat(a, names), _flat(b, names)
    if x.numel() != y.numel():
        raise ValueError(f"ccc: {x.numel()} against {y.numel()} values")
    if x.numel() == 0:
        raise ValueError("ccc: no values")
    mx, my = x.mean(), y.mean()
    vx, vy = ((x - mx) ** 2).mean(), ((y - my) ** 2).mean()
    cov = ((x - mx) * (y - my)).mean()
    return float(2 * cov / (vx + vy + (mx - my) ** 2))


def ccc_report(dir_a: str, dir_b: str) -> dict:
    """CCC of the survival scores of two finished IRP runs, overall and per layer.

    Returns:
        ``{"overall": float, "layers": {name: float}, "rounds": int, "weights": int}``.

    Raises:
        ValueError: the runs are over different weights (names or shapes) or round counts.
    """
    a, b = IRPDataset.load(dir_a), IRPDataset.load(dir_b)
    if a.description["shapes"] != b.description["shapes"]:
        raise ValueError(f"ccc: {dir_a} and {dir_b} are runs over different models (weight names "
                         "or shapes differ)")
    if a.rounds != b.rounds:
        raise ValueError(f"ccc: {dir_a} has {a.rounds} rounds, {dir_b} {b.rounds}")
    sa, sb = a.survival, b.survival
    return {"overall": ccc(sa, sb), "layers": {n: ccc(sa[n], sb[n]) for n in a.names},
            "rounds": a.rounds, "weights": a.numel()}


def format_report(rep: dict) -> str:
    lines = [f"CCC of survival scores ({rep['weights']:,} weights, {rep['rounds']} rounds): "
             f"{rep['overall']:.4f}"]
    width = max(len(n) for n in rep["layers"])
    lines += [f"  {n:<{width}}  {v:.4f}" for n, v in rep["layers"].items()]
    return "\n".join(lines)
