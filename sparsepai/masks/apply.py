"""``sp.apply_masks``: put keep-masks on a model."""

from __future__ import annotations

from typing import Mapping

import torch

# the attribute holding a parameter's bool keep-mask, where the masked optimizers find it
MASK_ATTR = "_sparsepai_mask"

# channel masks -> element masks, registered by sparsepai.structured (see
# register_channel_masks)
_CHANNEL_MASKS: list = []


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
    if check_masks(model, masks, "apply_masks"):
        return _apply_channel_masks(model, masks)
    _put(dict(model.named_parameters()), masks)
    model.sparsepai_masks = dict(masks)
    return model


def is_channel_masks(masks: Mapping[str, torch.Tensor], param_names) -> bool:
    """Whether ``masks`` are channel masks (1-D, keyed by module names) rather than element
    masks keyed by parameter names."""
    return bool(masks) and not set(masks) & set(param_names) and all(
        isinstance(m, torch.Tensor) and m.dim() == 1 for m in masks.values())


def check_masks(model: torch.nn.Module, masks: Mapping[str, torch.Tensor], where: str) -> bool:
    """Check that ``masks`` belong to ``model``, changing nothing.

    Args:
        model: the network.
        masks: element masks ``{parameter name: bool mask}`` or channel masks.
        where: the function (or file) named in error messages.

    Returns:
        True for channel masks, False for element masks.

    Raises:
        ValueError: a mask for a parameter or layer the model does not have, or of another
            shape. TypeError: a mask that is not a bool tensor.
    """
    params = dict(model.named_parameters())
    if is_channel_masks(masks, params):
        channel_element_masks(model, masks, where)
        return True
    unknown = sorted(set(masks) - set(params))
    if unknown:
        raise ValueError(f"{where}: the model has no parameters named {unknown[:5]} (masks for "
                         "a different model?)")
    for name, m in masks.items():
        if not isinstance(m, torch.Tensor) or m.dtype != torch.bool:
            raise TypeError(f"{where}: the mask of {name!r} must be a bool tensor, got "
                            f"{getattr(m, 'dtype', type(m).__name__)}")
        if m.shape != params[name].shape:
            raise ValueError(
                f"{where}: the mask of {name!r} has shape {tuple(m.shape)}, the parameter "
                f"{tuple(params[name].shape)} (masks for a different model?)")
    return False


def register_channel_masks(element_masks) -> None:
    """Turn channel masks into element masks with ``element_masks(model, channel_masks, where)
    -> {parameter name: bool mask}`` (raising ``ValueError`` for masks that do not fit the
    model). ``sparsepai.structured`` registers it on import: the channel graph sits above this
    package, which so imports none of it."""
    _CHANNEL_MASKS[:] = [element_masks]


def channel_element_masks(model: torch.nn.Module, channel_masks: Mapping[str, torch.Tensor],
                          where: str) -> dict:
    """The element masks of ``channel_masks`` on ``model`` (the one call into the channel graph,
    for applying and for checking mask files)."""
    if not _CHANNEL_MASKS:
        raise ValueError(f"{where}: channel masks need the channel graph: import "
                         "sparsepai.structured first (sp.apply_masks, sp.save_masks and "
                         "sp.load_masks do)")
    return _CHANNEL_MASKS[0](model, dict(channel_masks), where)


def _put(params, masks):
    for name, m in masks.items():
        p = params[name]
        m = m.to(p.device)
        p.masked_fill_(~m, 0)
        setattr(p, MASK_ATTR, m)


def _apply_channel_masks(model, channel_masks):
    masks = channel_element_masks(model, channel_masks, "apply_masks")
    _put(dict(model.named_parameters()), masks)
    model.sparsepai_masks = masks
    model.sparsepai_channel_masks = {n: m.clone() for n, m in channel_masks.items()}
    return model
