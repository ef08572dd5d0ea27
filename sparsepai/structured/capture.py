"""Capturing a model as ATen operations with ``torch.export`` (non-strict), on an example input.
"""

from __future__ import annotations

import torch
from torch import nn

from sparsepai.structured.graph import TraceError


def split_inputs(example_inputs, what: str = "example_inputs") -> tuple:
    """``(args, kwargs)`` for a tensor, a tuple/list of positional arguments or a dict of
    keyword arguments."""
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,), {}
    if isinstance(example_inputs, (tuple, list)):
        return tuple(example_inputs), {}
    if isinstance(example_inputs, dict):
        return (), dict(example_inputs)
    raise TypeError(f"{what}: expected a tensor, a tuple of positional arguments or a dict of "
                    f"keyword arguments, got {type(example_inputs).__name__}")


def example_from(options: dict, data, what: str):
    """``options["example_inputs"]``, or else the inputs of the first batch of ``data``."""
    ex = options.pop("example_inputs", None)
    if ex is not None:
        return ex
    if data is not None:
        for batch in data:
            if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
                raise ValueError(f"{what}: the first batch of data is not an (inputs, targets) "
                                 "pair")
            return batch[0]
    raise ValueError(f"{what}: structured pruning captures the model on an example input; pass "
                     "example_inputs= (a tensor, a tuple of positional arguments or a dict of "
                     "keyword arguments) or data")


def _culprit(model, exc):
    """The deepest module of ``model`` whose ``forward`` is on the failing stack."""
    names = {id(m): n for n, m in model.named_modules()}
    found = None
    e = exc
    while e is not None:
        tb = e.__traceback__
        while tb is not None:
            obj = tb.tb_frame.f_locals.get("self")
            if isinstance(obj, nn.Module) and id(obj) in names:
                found = obj
            tb = tb.tb_next
        e = e.__cause__ or e.__context__ if found is None else None
    if found is None:
        return None
    return names[id(found)], type(found).__name__


def _tensors(out):
    """The tensors of a model's output (tuples, lists, dicts and ``ModelOutput`` searched);
    other objects (e.g. a key/value cache) are left out: they are state, not results."""
    if isinstance(out, torch.Tensor):
        return (out,)
    if isinstance(out, dict):
        out = tuple(out.values())
    if isinstance(out, (tuple, list)):
        return tuple(t for o in out for t in _tensors(o))
    return ()


class _Outputs(nn.Module):
    """``model`` with its output flattened to a tuple of tensors, which export always takes."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, *args, **kwargs):
        return _tensors(self.model(*args, **kwargs))


PREFIX = "model."  # what _Outputs puts before every parameter name


def capture(model: nn.Module, example_inputs):
    """``torch.export.export(model, ..., strict=False)`` on the example input, without gradients
    and leaving the model as it was.

    Returns:
        The ``ExportedProgram`` of the model wrapped so that it returns a tuple of tensors:
        its parameter names start with :data:`PREFIX`.

    Raises:
        TraceError: naming the module that failed, the reason, and what to try.
    """
    args, kwargs = split_inputs(example_inputs)
    # meta buffers hold no values to restore (a model built under torch.device("meta"))
    state = {k: v.detach().clone() for k, v in model.named_buffers() if not v.is_meta}
    try:
        with torch.no_grad():
            return torch.export.export(_Outputs(model), args, kwargs, strict=False)
    except Exception as exc:  # export raises many types; all mean the same to the user
        where = _culprit(model, exc)
        where = f" (module {where[0]!r}, {where[1]})" if where and where[0] else ""
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0].rstrip(".")
        raise TraceError(
            f"torch.export cannot capture {type(model).__name__}{where}: {reason}. Pass an "
            "example input the model runs on (example_inputs=, a tensor, tuple or dict), or "
            "rewrite data-dependent Python control flow in that module (torch.cond).") from exc
    finally:
        with torch.no_grad():  # export runs on fake tensors; a forward that writes buffers
            # directly must still leave the user's model as it was
            for k, v in model.named_buffers():
                if k in state and not torch.equal(v, state[k]):
                    v.copy_(state[k])
