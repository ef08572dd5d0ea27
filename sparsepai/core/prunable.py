"""Which weights are prunable: the one rule every method, structured pruning and the
distributed driver share, and how many of them a sparsity keeps."""

from __future__ import annotations

import torch

PRUNABLE_TYPES = (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.Linear)


def is_linear_alias(module: torch.nn.Module) -> bool:
    """Whether ``module`` is a linear layer under another name: ``transformers``' ``Conv1D``
    (GPT-2: ``y = x @ W + b`` with ``W`` of shape (in, out) and ``nf`` = out), matched by its
    class name and attributes so that ``transformers`` is never imported."""
    w = getattr(module, "weight", None)
    return (type(module).__name__ == "Conv1D" and isinstance(w, torch.nn.Parameter)
            and w.dim() == 2 and getattr(module, "nf", None) == w.shape[1])


def is_prunable_module(module: torch.nn.Module) -> bool:
    """Conv1d/2d/3d, Linear (and subclasses) and linear aliases (:func:`is_linear_alias`) with a
    weight: the modules whose ``weight`` is prunable by default."""
    if getattr(module, "weight", None) is None:
        return False
    return isinstance(module, PRUNABLE_TYPES) or is_linear_alias(module)


def prunable_names(model: torch.nn.Module, prunable=None) -> list[str]:
    """Names (as in ``model.named_parameters()``) of the weights to score.

    Args:
        model: the network.
        prunable: None for the default (the ``weight`` of every module
            :func:`is_prunable_module` accepts; a weight tied to another parameter, such as a
            language model head sharing its embedding, is not one), a sequence of parameter
            names, or a predicate ``f(module_name, module, param_name, param) -> bool``.

    Returns:
        Parameter names in ``named_parameters()`` order.
    """
    names = [n for n, _ in model.named_parameters()]
    if prunable is None:
        chosen = {f"{mn}.weight" if mn else "weight" for mn, m in model.named_modules()
                  if is_prunable_module(m)}
    elif callable(prunable):
        chosen = set()
        for mn, m in model.named_modules():
            for pn, p in m.named_parameters(recurse=False):
                if prunable(mn, m, pn, p):
                    chosen.add(f"{mn}.{pn}" if mn else pn)
    elif isinstance(prunable, (str, bytes)):
        raise TypeError("option 'prunable' must be a sequence of parameter names or a "
                        f"predicate, got the string {prunable!r}")
    else:
        chosen = set(prunable)
        unknown = sorted(chosen - set(names))
        if unknown:
            raise ValueError(f"prunable names parameters the model does not have: {unknown[:5]}")
    out = [n for n in names if n in chosen]
    if not out:
        raise ValueError("the model has no prunable weights (no Conv/Linear weight, or the "
                         "'prunable' option selected nothing)")
    return out


def keep_count(params: dict, names, sparsity: float) -> int:
    """How many of the named weights a sparsity keeps: ``N - round(sparsity * N)`` (Python
    ``round``) of their N entries."""
    total = sum(params[n].numel() for n in names)
    return total - round(sparsity * total)
