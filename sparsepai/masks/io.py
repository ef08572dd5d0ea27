"""Keep-masks on disk: safetensors (never pickle) with JSON metadata, written atomically through
:mod:`sparsepai._io`.

The metadata (a JSON object under the safetensors metadata key ``"sparsepai"``) holds
``"kind": "masks"``, ``"structured"`` (channel masks or element masks) when known, and whatever
the caller adds (the command line records its arguments).
"""

from __future__ import annotations

from typing import Mapping

import torch

from sparsepai import _io
from sparsepai.masks.apply import check_masks

KIND = "masks"


def save_masks(path: str, masks: Mapping[str, torch.Tensor], model: torch.nn.Module | None = None,
               *, meta: dict | None = None) -> None:
    """Write keep-masks to ``path`` atomically (temporary file, fsync, rename).

    Args:
        path: the ``.safetensors`` file (missing folders are created).
        masks: ``{parameter name: bool mask}`` or channel masks ``{module name: bool
            (out_channels,)}``, as ``sp.prune`` returns them.
        model: if given, the masks are checked against it first (nothing is written for masks
            of another model) and the file records whether they are channel masks.
        meta: extra JSON-serialisable description stored with the masks (e.g. the method).

    Raises:
        TypeError: a mask that is not a bool tensor. ValueError: masks that do not fit ``model``.
    """
    for name, m in masks.items():
        if not isinstance(m, torch.Tensor) or m.dtype != torch.bool:
            raise TypeError(f"save_masks: the mask of {name!r} must be a bool tensor, got "
                            f"{getattr(m, 'dtype', type(m).__name__)}")
    info = dict(meta or {})
    if model is not None:
        info["structured"] = check_masks(model, masks, "save_masks")
        info.setdefault("model_class", type(model).__name__)
    info["kind"] = KIND
    _io.save_tensors(path, dict(masks), info)


def read_masks(path: str, model: torch.nn.Module | None = None) -> tuple[dict, dict]:
    """Read a mask file and its metadata.

    Args:
        path: a file written by :func:`save_masks`.
        model: if given, check that the masks belong to it: every element mask names one of
            its parameters with the same shape, every channel mask one of its prunable layers
            with that many output channels.

    Returns:
        ``(masks, meta)``; ``meta["structured"]`` is set whenever ``model`` is given.

    Raises:
        FileNotFoundError: no such file. ValueError: a truncated, corrupt or non-safetensors
            file, bad metadata, another kind of sparsepai file, masks that are not bool, or
            masks of another model; the message names ``path`` and the problem. Nothing is
            changed.
    """
    masks, meta = _io.read_tensors(path, "mask")
    if str(meta.get("format", "")).startswith("sparsepai.slim/"):
        raise ValueError(f"{path}: a sparsepai slim model file (weights of a channel-pruned "
                         "model), not a mask file; read it with "
                         "sparsepai.structured.load_slim(path, model)")
    kind = meta.get("kind", KIND)  # files of sparsepai 0.1 carry no kind
    if kind != KIND:
        raise ValueError(f"{path}: a sparsepai {kind} file, not a mask file")
    for name, m in masks.items():
        if m.dtype != torch.bool:
            raise ValueError(f"{path}: the mask of {name!r} is {m.dtype}; mask files hold bool "
                             "tensors")
    if model is not None:
        try:
            structured = check_masks(model, masks, path)
        except (ValueError, TypeError) as exc:
            msg = str(exc) if "different model" in str(exc) else (
                f"{exc} (the mask file is for a different model?)")
            raise ValueError(msg) from None
        if meta.get("structured", structured) != structured:
            raise ValueError(f"{path}: holds {'channel' if meta['structured'] else 'element'} "
                             "masks, which do not fit this model's "
                             f"{'channels' if structured else 'parameters'}")
        meta["structured"] = structured
    return masks, meta


def load_masks(path: str, model: torch.nn.Module | None = None) -> dict:
    """Read keep-masks written by :func:`save_masks` (``sp.load_masks``).

    Args:
        path: the file.
        model: if given, the masks are checked against it (see :func:`read_masks`).

    Returns:
        ``{name: bool tensor}`` on the CPU.

    Raises:
        As :func:`read_masks`.
    """
    return read_masks(path, model)[0]
