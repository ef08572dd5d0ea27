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
            ``sp.prune`` returns for unstructured pruning; or channel masks ``{module name:
            bool (out_channels,)}`` from ``sp.prune(..., structured=True)``, which zero each
            pruned channel's weights and bias, the affine parameters of the norm (and depthwise
            convolution) that follows it, and the input columns of dead channels in the layers
            that read them, so that the masked dense model computes what ``sp.slim`` computes.
            The element masks this makes are what is recorded.

    Returns:
        The same model. Each masked parameter carries its mask, so that
        ``sp.optim.MaskedSGD(model.named_parameters(), masks=None, ...)`` finds it, and
        ``model.sparsepai_masks`` holds the dict.

    Shapes:
        ``masks[name].shape == dict(model.named_parameters())[name].shape``.
    """
    params = dict(model.named_parameters())
    if masks and not set(masks) & set(params) and all(
            isinstance(m, torch.Tensor) and m.dim() == 1 for m in masks.values()):
        return _apply_channel_masks(model, masks)
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
                f"{tuple(p.shape)} ")
    _put(params, masks)
    model.sparsepai_masks = dict(masks)
    return model


def _put(params, masks):
    for name, m in masks.items():
        p = params[name]
        m = m.to(p.device)
        p.masked_fill_(~m, 0)
        setattr(p, _MASK_ATTR, m)


def _apply_channel_masks(model, channel_masks):
    from sparsepai.structured.channels import resolve, weight_masks
    from sparsepai.structured.graph import analyse

    plan = resolve(analyse(model), dict(channel_masks), "apply_masks")
    masks = weight_masks(model, plan)
    _put(dict(model.named_parameters()), masks)
    model.sparsepai_masks = masks
    model.sparsepai_channel_masks = {n: m.clone() for n, m in channel_masks.items()}
    return model
