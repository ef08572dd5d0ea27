"""Method options: frozen dataclass fields with their allowed values, checked before any work.

A config field's type annotation says what it accepts (``int``, ``float``, ``bool``, ``str``,
``tuple``, ``object``, or one of them ``| None``); :func:`option` adds a range or choices.
:func:`make_config` checks every given option against both and names the method and the option
in a ``TypeError`` (wrong type) or ``ValueError`` (out of range).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import types
import typing

import torch


def option(default, *, at_least=None, above=None, below=None, choices=None):
    """A config field with a range (``at_least <= v``, ``above < v``, ``v < below``) or a set of
    ``choices``, checked by :func:`make_config`."""
    meta = {"at_least": at_least, "above": above, "below": below, "choices": choices}
    return dataclasses.field(default=default, metadata={k: v for k, v in meta.items()
                                                        if v is not None})


def _kinds(annotation) -> tuple[set, bool]:
    """The base types an annotation allows, and whether None is allowed."""
    union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    args = typing.get_args(annotation) if union else (annotation,)
    return {a for a in args if a is not type(None)}, type(None) in args


def _converted(kinds: set, value):
    """``value`` as the annotation's type, or None when it does not fit."""
    if bool in kinds and isinstance(value, bool):
        return value
    if isinstance(value, bool):
        return None
    if int in kinds and isinstance(value, int):
        return value
    if float in kinds and isinstance(value, (int, float)):
        return float(value)
    if str in kinds and isinstance(value, str):
        return value
    if tuple in kinds and isinstance(value, (tuple, list)):
        if all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            return tuple(value)
    return None


def _check_range(method: str, name: str, value, meta):
    if "choices" in meta and value not in meta["choices"]:
        raise ValueError(f"method {method!r}: option {name!r} must be one of "
                         f"{list(meta['choices'])}, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"method {method!r}: option {name!r} must be finite, got {value!r}")
    if not any(k in meta for k in ("at_least", "above", "below")):
        return
    ok = (value >= meta.get("at_least", -math.inf) and value > meta.get("above", -math.inf)
          and value < meta.get("below", math.inf))
    if not ok:
        raise ValueError(f"method {method!r}: option {name!r} must be {_range_text(meta)}, "
                         f"got {value!r}")


def _range_text(meta) -> str:
    low = (f"[{meta['at_least']}" if "at_least" in meta else
           f"({meta['above']}" if "above" in meta else None)
    if "below" not in meta:
        return f">= {low[1:]}" if low[0] == "[" else f"> {low[1:]}"
    if low is None:
        return f"< {meta['below']}"
    return f"in {low}, {meta['below']})"


def make_config(method, options: dict):
    """The method's config from user options, every option checked first.

    Args:
        method: a registered :class:`~sparsepai.core.registry.Method` (its ``name`` and
            ``config`` dataclass).
        options: ``{option name: value}``.

    Returns:
        ``method.config(**options)``.
    """
    fields = {f.name: f for f in dataclasses.fields(method.config)}
    unknown = sorted(set(options) - set(fields))
    if unknown:
        raise TypeError(f"method {method.name!r} has no options {unknown}; its options: "
                        f"{sorted(fields)}")
    hints = typing.get_type_hints(method.config)
    checked = {}
    for name, value in options.items():
        kinds, optional = _kinds(hints[name])
        if object in kinds or (value is None and optional):
            checked[name] = value
            continue
        v = _converted(kinds, value)
        if v is None:
            want = " or ".join(sorted(k.__name__ for k in kinds)) + (" or None" if optional else "")
            raise TypeError(f"method {method.name!r}: option {name!r} must be {want}, got "
                            f"{type(value).__name__} {value!r}")
        _check_range(method.name, name, v, fields[name].metadata)
        checked[name] = v
    return method.config(**checked)


def check_sparsity(sparsity):
    """A clear error unless ``sparsity`` is a number in [0, 1)."""
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)):
        raise TypeError(f"sparsity must be a number in [0, 1), got {type(sparsity).__name__}")
    if not 0 <= sparsity < 1:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")


def check_min_per_layer(min_per_layer, scope):
    """The ``min_per_layer`` option (weights, or channels when structured) and its scope."""
    if isinstance(min_per_layer, bool) or not isinstance(min_per_layer, int):
        raise TypeError(f"prune: min_per_layer must be an int, got "
                        f"{type(min_per_layer).__name__}")
    if min_per_layer < 0 or (min_per_layer and scope != "global"):
        raise ValueError(f"prune: min_per_layer must be >= 0 and goes with scope='global', got "
                         f"{min_per_layer} with scope={scope!r}")


# what each method needs of the weights' values: said when a model on the meta device has none
_NEEDS = {"random": "draws masks for the weights' real tensors",
          "magnitude": "ranks the weights' values"}
# structured methods whose channel scores need shapes alone: they run on the meta device
# (sparsepai.structured.prune draws random's per channel)
VALUE_FREE_STRUCTURED = ("random",)


def check_call(what: str, model, method, loss_fn, structured: bool = False) -> None:
    """The arguments every ``sp.score``/``sp.prune`` call shares, checked before any work
    (``group=`` is checked by :mod:`sparsepai.distributed.pruning`)."""
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"{what}: model must be a torch.nn.Module, got {type(model).__name__}")
    if loss_fn is not None and not callable(loss_fn):
        raise TypeError(f"{what}: loss_fn must be callable as loss_fn(logits, targets), got "
                        f"{type(loss_fn).__name__} {loss_fn!r}")
    if any(p.is_meta for p in model.parameters()):
        if structured and method in VALUE_FREE_STRUCTURED:
            return  # the channel graph and these scores need shapes alone
        if structured:
            raise ValueError(f"{what}: the model is on the meta device (no weights); structured "
                             f"pruning scores real weights on an example (method {method!r}): "
                             "materialise the model (model.to_empty(device='cpu') then "
                             "initialise or load its weights) and pass example_inputs= (or "
                             "data) on that device; on the meta device only "
                             f"{', '.join(map(repr, VALUE_FREE_STRUCTURED))} runs")
        need = _NEEDS.get(method, "takes gradients of the weights' values on data")
        raise ValueError(f"{what}: the model is on the meta device (no weight values); method "
                         f"{method!r} {need}: materialise it first (model.to_empty(device=...) "
                         "then initialise or load its weights)")


@contextlib.contextmanager
def explain_inference_mode(what: str, method):
    """A failure inside ``torch.inference_mode()`` explained: gradients cannot be taken there
    (``torch.enable_grad`` lifts ``no_grad``, not inference mode)."""
    try:
        yield
    except RuntimeError as exc:
        if not torch.is_inference_mode_enabled():
            raise
        raise RuntimeError(f"{what}: method {method!r} takes gradients, which "
                           "torch.inference_mode() forbids (torch.enable_grad cannot lift it, "
                           f"as it lifts no_grad); call {what} outside the inference_mode "
                           "block") from exc


def check_no_nan(method: str, scores: dict, what: str = "layers") -> None:
    """Refuse NaN scores: ``sp.topk_mask`` would rank them lowest, so the masks would be decided
    by position (one layer kept whole, another emptied) without a word.

    Args:
        method: the method's name, for the message. scores: ``{layer name: scores}``.

    Raises:
        ValueError: naming the method and the layers with NaN scores.
    """
    from sparsepai.ops import dispatch

    tensors = list(scores.values())
    devices = {t.device.type for t in tensors}
    if len(devices) == 1 and all(t.dtype in (torch.float16, torch.bfloat16, torch.float32,
                                             torch.float64) for t in tensors):
        # one pass of the scan kernel, no temporary per tensor: the common case has no NaN
        if int(dispatch.call("first_nan", devices.pop(), [t.detach() for t in tensors])) < 0:
            return
    bad = [n for n, s in scores.items() if bool(torch.isnan(s).any())]
    if bad:
        raise nan_error(method, bad, len(scores), what)


def nan_error(method: str, bad: list, total: int, what: str = "layers") -> ValueError:
    """The error of :func:`check_no_nan` for the ``bad`` of ``total`` score tensors."""
    return ValueError(f"prune: method {method!r} gave NaN scores in {len(bad)} of {total} "
                      f"{what} ({', '.join(map(str, bad[:5]))}); no masks from them: check the "
                      "model's weights, the data and the method's options (a corrupt predictor "
                      "file, a too large learning rate)")
