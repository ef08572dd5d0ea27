"""Method options: frozen dataclass fields with their allowed values, checked before any work.

A config field's type annotation says what it accepts (``int``, ``float``, ``bool``, ``str``,
``tuple``, ``object``, or one of them ``| None``); :func:`option` adds a range or choices.
:func:`make_config` checks every given option against both and names the method and the option
in a ``TypeError`` (wrong type) or ``ValueError`` (out of range).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing


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
