"""What every pruning method shares: which weights are prunable, the data, the loss, the
registry of methods, and running a method on a private copy of the model."""

from __future__ import annotations

import copy
import dataclasses
import importlib
import itertools
from typing import Callable, Iterable

import torch

PRUNABLE_TYPES = (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.Linear)


def prunable_names(model: torch.nn.Module, prunable=None) -> list[str]:
    """Names (as in ``model.named_parameters()``) of the weights to score.

    Args:
        model: the network.
        prunable: None for the default (the ``weight`` of every Conv1d/2d/3d and Linear), a
            sequence of parameter names, or a predicate ``f(module_name, module, param_name,
            param) -> bool``.

    Returns:
        Parameter names in ``named_parameters()`` order.
    """
    names = [n for n, _ in model.named_parameters()]
    if prunable is None:
        chosen = {f"{mn}.weight" if mn else "weight" for mn, m in model.named_modules()
                  if isinstance(m, PRUNABLE_TYPES) and getattr(m, "weight", None) is not None}
    elif callable(prunable):
        chosen = set()
        for mn, m in model.named_modules():
            for pn, p in m.named_parameters(recurse=False):
                full = f"{mn}.{pn}" if mn else pn
                if prunable(mn, m, pn, p):
                    chosen.add(full)
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


def take_batches(data, n: int, method: str) -> list:
    """The first n (inputs, targets) batches of ``data``, or a clear error."""
    if data is None:
        raise ValueError(f"method {method!r} needs data: an iterable of (inputs, targets) batches")
    batches = list(itertools.islice(iter(data), n))
    if len(batches) < n:
        raise ValueError(f"method {method!r} needs {n} batches of data, got {len(batches)}")
    for i, b in enumerate(batches):
        if not (isinstance(b, (tuple, list)) and len(b) == 2):
            raise ValueError(f"batch {i} of data is not an (inputs, targets) pair")
    return batches


def default_loss(loss_fn):
    return loss_fn if loss_fn is not None else torch.nn.functional.cross_entropy


def check_finite(loss: torch.Tensor, what: str):
    if not bool(torch.isfinite(loss)):
        raise FloatingPointError(f"{what}: the loss is {loss.item()}; lower the learning rate or "
                                 "check the data")


@dataclasses.dataclass(frozen=True)
class Method:
    """A registered pruning method: its config class and score function.

    ``score(model, names, batches_or_data, loss_fn, config) -> {name: Tensor}`` runs on a private
    copy of the user's model. ``prune`` (optional) overrides one-shot thresholding for iterative
    methods: ``prune(model, names, data, loss_fn, config, keep) -> {name: bool Tensor}``.
    """

    name: str
    config: type
    score: Callable
    prune: Callable | None = None
    needs_data: bool = True


REGISTRY: dict[str, Method] = {}


def register(name: str, config: type, *, needs_data: bool = True, prune: Callable | None = None):
    """Decorator registering a score function under ``name``."""

    def deco(fn):
        REGISTRY[name] = Method(name, config, fn, prune, needs_data)
        return fn

    return deco


def get_method(name: str) -> Method:
    importlib.import_module("sparsepai.pruning.methods")  # registers them

    if name not in REGISTRY:
        raise ValueError(f"unknown pruning method {name!r}; valid methods: "
                         f"{', '.join(sorted(REGISTRY))}")
    return REGISTRY[name]


def make_config(method: Method, options: dict):
    fields = {f.name for f in dataclasses.fields(method.config)}
    unknown = sorted(set(options) - fields)
    if unknown:
        raise TypeError(f"method {method.name!r} has no options {unknown}; its options: "
                        f"{sorted(fields)}")
    return method.config(**options)


def private_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A deep copy that scoring may change freely: the user's weights, buffers, gradients and
    train/eval mode are never touched."""
    from sparsepai.distributed.replicated import sync_gradients_of

    clone = copy.deepcopy(model)
    for p in clone.parameters():
        p.grad = None
    return sync_gradients_of(clone)  # under sp.prune(..., group=): gradients averaged


def iterate(data: Iterable):
    """Batches of data, cycling if a method asks for more passes than one epoch."""
    while True:
        empty = True
        for b in data:
            empty = False
            yield b
        if empty:
            raise ValueError("data yielded no batches")
