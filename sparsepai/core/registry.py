"""What every pruning method shares: which weights are prunable, the data, running the model on
a batch (inputs and outputs of any shape: tensors, tuples, dicts, ``ModelOutput``), the loss and
its gradients, and the registry of methods.

Gradients of the loss on a batch come from one function, :func:`loss_grads`: every
gradient-based method (SNIP, GraSP, FORCE, ProsPr, the after-training baselines' scores) goes
through it, so that a change of how gradients are made (averaging over a process group) is one
edit.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import itertools
from collections.abc import Iterator, Mapping
from typing import Callable

import torch

from sparsepai.core.options import make_config  # noqa: F401 (callers import it from here)

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


# ------------------------------------------------------------------------------------------
# running the model on a batch

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


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The default loss: ``torch.nn.functional.cross_entropy`` (mean), with the class dimension
    second as torch has it, or last for sequence logits (B, T, classes) with targets (B, T)."""
    f = torch.nn.functional.cross_entropy
    if (logits.dim() > 2 and targets.shape == logits.shape[:-1]
            and targets.shape != logits.shape[:1] + logits.shape[2:]):
        return f(logits.flatten(0, -2), targets.flatten())
    return f(logits, targets)


def default_loss(loss_fn):
    """``loss_fn`` or :func:`cross_entropy`; either is called as ``loss_fn(logits, targets)``."""
    return loss_fn if loss_fn is not None else cross_entropy


def check_finite(loss: torch.Tensor, what: str):
    if not bool(torch.isfinite(loss)):
        raise FloatingPointError(f"{what}: the loss is {loss.item()}; lower the learning rate or "
                                 "check the data")


def batch_loss(model, batch, loss_fn, what: str, state: dict | None = None) -> torch.Tensor:
    """``loss_fn(logits, targets)`` for one ``(inputs, targets)`` batch (see :func:`call` for
    ``state``); a non-finite loss raises ``FloatingPointError`` naming ``what``."""
    x, y = batch
    loss = loss_fn(model_logits(model, x, state), y)
    if not (isinstance(loss, torch.Tensor) and loss.numel() == 1):
        raise ValueError(f"{what}: loss_fn must return a scalar tensor, got "
                         f"{type(loss).__name__} {getattr(loss, 'shape', '')}")
    check_finite(loss, what)
    return loss


def loss_grads(model, wrt, batch, loss_fn, what: str, *, state: dict | None = None,
               create_graph: bool = False) -> list:
    """The gradients of :func:`batch_loss` with respect to the tensors ``wrt`` (zeros for a
    tensor the loss does not depend on); ``create_graph`` to differentiate them again."""
    wrt = list(wrt)
    loss = batch_loss(model, batch, loss_fn, what, state)
    if any(hasattr(t, "to_local") for t in wrt):  # FSDP2-sharded parameters (DTensors)
        from sparsepai.distributed.sharded import backward_grads

        if create_graph or state is not None:
            raise ValueError(f"{what}: gradients of FSDP2-sharded parameters cannot be "
                             "differentiated again nor taken under replaced parameters")
        return backward_grads(loss, wrt)
    return list(torch.autograd.grad(loss, wrt, create_graph=create_graph,
                                    materialize_grads=True))


def summed_grads(model, names, batches, loss_fn, what: str) -> dict:
    """Sum over ``batches`` of dL/dw for the named weights (the model's own parameters)."""
    params = dict(model.named_parameters())
    total = {n: torch.zeros_like(params[n]) for n in names}
    for b in batches:
        for n, g in zip(names, loss_grads(model, [params[n] for n in names], b, loss_fn, what)):
            total[n] += g
    return total


# ------------------------------------------------------------------------------------------
# the registry

@dataclasses.dataclass(frozen=True)
class Method:
    """A registered pruning method.

    ``saliency(model, names, data, loss_fn, config) -> {name: Tensor}`` is the method's signed
    saliency of every named weight, on a private copy of the user's model; the score (higher =
    keep) is its magnitude, or the saliency itself when ``absolute`` is False. An iterative
    method registers ``schedule(model, names, data, loss_fn, config) -> rounds`` instead, an
    object with ``counts(total, keep) -> [kept count per round]`` and ``saliency(masks) ->
    {name: Tensor}`` (the saliency on the network masked by the previous round, None first);
    its one-shot saliency is the first round's.
    """

    name: str
    config: type
    saliency: Callable
    schedule: Callable | None = None
    absolute: bool = True

    def scores(self, saliency: dict) -> dict:
        """Scores (higher = keep) from signed saliencies."""
        return {n: s.abs() if self.absolute else s for n, s in saliency.items()}

    def masks(self, model, names, data, loss_fn, config, keep: int, threshold) -> dict:
        """Keep-masks for ``keep`` weights: one ``threshold(scores, keep)`` of the scores, or
        one per round of the schedule (every round thresholded the same way)."""
        if self.schedule is None:
            return threshold(self.scores(self.saliency(model, names, data, loss_fn, config)), keep)
        from sparsepai.core.iterative import prune_rounds

        rounds = self.schedule(model, names, data, loss_fn, config)
        params = dict(model.named_parameters())
        masks = prune_rounds(rounds.counts(sum(params[n].numel() for n in names), keep),
                             lambda r, current: self.scores(rounds.saliency(current)), threshold)
        if masks is None:  # no round ran
            masks = {n: torch.ones_like(params[n], dtype=torch.bool) for n in names}
        return masks


REGISTRY: dict[str, Method] = {}


def register(name: str, config: type, *, iterative: bool = False, absolute: bool = True):
    """Decorator registering a method's saliency function (or, ``iterative``, its schedule
    function) under ``name``."""

    def deco(fn):
        if iterative:
            def first_round(model, names, data, loss_fn, cfg):
                return fn(model, names, data, loss_fn, cfg).saliency(None)

            REGISTRY[name] = Method(name, config, first_round, fn, absolute)
        else:
            REGISTRY[name] = Method(name, config, fn, None, absolute)
        return fn

    return deco


def get_method(name: str) -> Method:
    importlib.import_module("sparsepai.pruning.methods")  # registers them
    if not isinstance(name, str) or name not in REGISTRY:
        raise ValueError(f"unknown pruning method {name!r}; valid methods: "
                         f"{', '.join(sorted(REGISTRY))}")
    return REGISTRY[name]


def private_copy(model: torch.nn.Module, names=()) -> torch.nn.Module:
    """A deep copy that scoring may change freely: the user's weights, buffers, gradients,
    ``requires_grad`` flags and train/eval mode are never touched. The named weights require
    gradients in the copy, so frozen weights are scored like the others. Under
    ``sp.prune(..., group=)`` the copy averages its gradients over the group."""
    from sparsepai.distributed.replicated import sync_gradients_of

    clone = copy.deepcopy(model)
    params = dict(clone.named_parameters())
    for p in clone.parameters():
        p.grad = None
    for n in names:
        params[n].requires_grad_(True)
    return sync_gradients_of(clone)
