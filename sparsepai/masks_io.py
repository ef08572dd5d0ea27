"""Keep-masks on disk: safetensors (never pickle) with the run's description as metadata."""

from __future__ import annotations

import json

import torch


def save_masks(path: str, masks: dict, meta: dict | None = None) -> None:
    """Write ``{param name: bool mask}`` to ``path`` (safetensors) with ``meta`` as JSON."""
    from safetensors.torch import save_file

    save_file({k: v.contiguous().cpu() for k, v in masks.items()}, path,
              metadata={"sparsepai": json.dumps(meta or {})})


def load_masks(path: str, model: torch.nn.Module | None = None) -> tuple[dict, dict]:
    """Read masks (and their metadata). With ``model``, check that every mask names one of its
    parameters with the same shape (channel masks, metadata ``structured``: one of its
    convolution/linear layers with that many output channels): a mask file for a different
    model is a clear error."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    masks = load_file(path)
    with safe_open(path, "pt") as f:
        meta = json.loads((f.metadata() or {}).get("sparsepai", "{}"))
    if model is not None and meta.get("structured"):
        from sparsepai.structured.channels import resolve
        from sparsepai.structured.graph import analyse

        try:
            resolve(analyse(model), masks, path)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{exc} (the channel-mask file is for a different model?)") from None
    elif model is not None:
        params = dict(model.named_parameters())
        unknown = [n for n in masks if n not in params]
        if unknown:
            raise ValueError(f"{path}: mask for {unknown[0]!r}, which the model does not have: "
                             "the mask file is for a different model")
        for name, m in masks.items():
            if m.shape != params[name].shape or m.dtype != torch.bool:
                raise ValueError(f"{path}: mask {name!r} has shape {tuple(m.shape)} "
                                 f"({m.dtype}), the model's parameter "
                                 f"{tuple(params[name].shape)}: the mask file is for a "
                                 "different model")
    return masks, meta
