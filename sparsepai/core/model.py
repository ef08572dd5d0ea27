"""Running any model on a batch: inputs and outputs of any shape (tensors, tuples, dicts,
Hugging Face ``ModelOutput``); the first batches of the data; and the private copy every method
scores on.

:func:`private_copy` runs the hooks registered with :func:`register_copy_hook` on every copy:
``sparsepai.distributed`` plugs its gradient averaging in there (this module imports nothing of
it)."""

from __future__ import annotations

import contextlib
import copy
import itertools
from collections.abc import Iterator, Mapping
from typing import Callable

import torch

class Replay:
    """A one-shot iterator (a generator, ``iter(loader)``) made re-iterable: every pass yields
    the same batches, in order; batches are drawn from the source only when a pass first
    reaches them and kept, so a method that reads the data twice (a fingerprint then the
    gradients, a cost probe then the scores, several epochs) sees the same batches each time,
    never the rest of a half-consumed stream."""

    def __init__(self, source: Iterator):
        self._source, self._seen, self._done = source, [], False

    def __iter__(self):
        i = 0
        while True:
            if i == len(self._seen):
                if self._done:
                    return
                try:
                    self._seen.append(next(self._source))
                except StopIteration:
                    self._done = True
                    return
            yield self._seen[i]
            i += 1


def reiterable(data):
    """``data`` unchanged, or a :class:`Replay` of it if it is a one-shot iterator. Every entry
    point that hands data to methods (``sp.score``, ``sp.prune``, ``prune_after_training``,
    ``irp``) passes it through here first."""
    return Replay(data) if isinstance(data, Iterator) else data


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


def call(model: torch.nn.Module, inputs, state: dict | None = None):
    """``model`` on ``inputs``: a tensor (one argument), a tuple or list (positional
    arguments) or a mapping (keyword arguments, e.g. ``input_ids``, ``attention_mask``).
    With ``state`` (``{name: tensor}`` or a tuple of such dicts) the model runs with those
    parameters and buffers in place of its own (``torch.func.functional_call``)."""
    if isinstance(inputs, Mapping):
        args, kwargs = (), dict(inputs)
    elif isinstance(inputs, (tuple, list)):
        args, kwargs = tuple(inputs), {}
    else:
        args, kwargs = (inputs,), {}
    if state is None:
        return model(*args, **kwargs)
    return torch.func.functional_call(model, state, args, kwargs)


def logits_of(output) -> torch.Tensor:
    """The logits in a model's output: the output itself if it is a tensor, its ``logits``
    attribute or key (Hugging Face ``ModelOutput``), else the first element of a tuple, list
    or mapping."""
    if isinstance(output, torch.Tensor):
        return output
    logits = getattr(output, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    first = None
    if isinstance(output, Mapping):
        first = output["logits"] if "logits" in output else next(iter(output.values()), None)
    elif isinstance(output, (tuple, list)) and output:
        first = output[0]
    if isinstance(first, torch.Tensor):
        return first
    raise TypeError(f"cannot find the logits in the model's output (a {type(output).__name__}): "
                    "expected a tensor, a tuple or list whose first element is the logits, or "
                    "an object with a 'logits' tensor")


def model_logits(model: torch.nn.Module, inputs, state: dict | None = None) -> torch.Tensor:
    """The logits of ``model`` on ``inputs``: :func:`call` then :func:`logits_of`. Every method
    runs the model through this."""
    return logits_of(call(model, inputs, state))


# functions applied to every private copy, in order (``hook(model) -> model``)
_COPY_HOOKS: list = []


# predicates of the hooks: whether a hook acts now, so that scoring needs a copy to act on
_COPY_NEEDED: list = []


def register_copy_hook(hook: Callable, needs_copy: Callable | None = None) -> None:
    """Run ``hook(copy) -> copy`` on every :func:`private_copy` (registered once; e.g.
    ``sparsepai.distributed.replicated`` averaging gradients over a process group).
    ``needs_copy() -> bool``: whether the hook acts now; while it does, :func:`scoring_model`
    gives even the methods that change no weight a private copy for it to act on."""
    if hook not in _COPY_HOOKS:
        _COPY_HOOKS.append(hook)
        if needs_copy is not None:
            _COPY_NEEDED.append(needs_copy)


def private_copy(model: torch.nn.Module, names=()) -> torch.nn.Module:
    """A deep copy that scoring may change freely: the user's weights, buffers, gradients,
    ``requires_grad`` flags and train/eval mode are never touched. The named weights require
    gradients in the copy, so frozen weights are scored like the others. The hooks registered
    with :func:`register_copy_hook` run on the copy (under ``sp.prune(..., group=)`` it averages
    its gradients over the group)."""
    clone = copy.deepcopy(model)
    params = dict(clone.named_parameters())
    for p in clone.parameters():
        p.grad = None
    for n in names:
        params[n].requires_grad_(True)
    for hook in _COPY_HOOKS:
        clone = hook(clone)
    return clone


@contextlib.contextmanager
def restored(model: torch.nn.Module, values: bool = False):
    """Everything scoring may change on the user's model, put back on exit: each parameter's
    gradient (the same tensor) and ``requires_grad`` flag, each module's train/eval mode, the
    buffers' values (a forward in train mode updates running statistics) and, with ``values``
    (a method that steps the weights in place), the parameters' values. Sharded (``DTensor``)
    parameters are saved and restored through their local shards."""
    def local(t):
        return t.to_local() if hasattr(t, "to_local") else t

    params = list(model.parameters())
    saved = [(p, p.grad, p.requires_grad,
              local(p).detach().clone() if values else None) for p in params]
    buffers = [(b, local(b).detach().clone()) for b in model.buffers() if not b.is_meta]
    modes = [(m, m.training) for m in model.modules()]
    try:
        yield
    finally:
        with torch.no_grad():
            for p, grad, flag, value in saved:
                if value is not None:
                    local(p).copy_(value)
                p.grad = grad
                p.requires_grad_(flag)
            for b, value in buffers:
                local(b).copy_(value)
        for m, mode in modes:
            m.training = mode


@contextlib.contextmanager
def borrowed(model: torch.nn.Module, names=(), values: bool = False):
    """The user's model itself for scoring (:func:`restored` on exit): no parameter holds a
    gradient and the named weights (frozen ones too) require gradients meanwhile, as
    :func:`private_copy` makes them."""
    params = dict(model.named_parameters())
    with restored(model, values):
        for p in params.values():
            p.grad = None
        for n in names:
            params[n].requires_grad_(True)
        yield model


@contextlib.contextmanager
def scoring_model(model: torch.nn.Module, names=(), in_place: bool = False):
    """The model a method scores, as a context: for a method that never changes a weight
    (``in_place``, :class:`~sparsepai.core.registry.Method`) the user's model itself
    (:func:`borrowed`), so that scoring costs no copy of the model; else a :func:`private_copy`.
    While a copy hook acts (``sp.prune(..., group=)``'s gradient averaging) it is always a copy,
    for the hook to act on."""
    if not in_place or any(needed() for needed in _COPY_NEEDED):
        yield private_copy(model, names)
        return
    with borrowed(model, names) as work:
        yield work
