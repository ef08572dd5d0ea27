"""``sp.apply_masks``: put keep-masks on a model."""

from __future__ import annotations

from typing import Mapping

import torch

from sparsepai.optim.masked import _MASK_ATTR


@torch.no_grad()
def apply_masks(model: torch.nn.Module, masks: Mapping[str, torch.Tensor]) -> torch.nn.Module:
    """Zero the pruned weights of ``model`` in place and record the masks on it.

    Args:
        model: the network.
        masks: ``{parameter name: bool mask}`` (True = kept), each shaped like its parameter, as
            ``sp.prune`` returns for unstructured pruning.

    Returns:
        The same model. Each masked parameter carries its mask, so that
        ``sp.optim.MaskedSGD(model.named_parameters(), masks=None, ...)`` finds it, and
        ``model.sparsepai_masks`` holds the dict.

    Shapes:
        ``masks[name].shape == dict(model.named_parameters())[name].shape``.
    """
    params = dict(model.named_parameters())
    unknown = sorted(set(masks) - set(params))
    if unknown:
        raise ValueError(f"apply_masks: the model has no parameters named {unknown[:5]}")
    for name, m in masks.items():
        p = params[name]
        if not isinstance(m, torch.Tensor) or m.dtype != torch.bool:
            raise TypeError(f"apply_masks: the mask of {name!r} must be a bool tensor")
        if m.shape != p.shape:
            raise ValueError(
                f"apply_masks: the mask of {name!r} has shape {tuple(m.shape)}, the parameter "
                f"{tuple(p.shape)} (channel masks from structured pruning are not supported yet)")
    for name, m in masks.items():
        p = params[name]
        m = m.to(p.device)
        p.masked_fill_(~m, 0)
        setattr(p, _MASK_ATTR, m)
    model.sparsepai_masks = dict(masks)
    return model
