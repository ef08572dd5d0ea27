"""Channel masks on the dense model: ``sp.apply_masks``, ``sp.save_masks`` and ``sp.load_masks``
turn channel masks into element masks here. Importing this module registers
:func:`element_masks` with :mod:`sparsepai.masks.apply`, which sits below the channel graph and
so does not import it."""

from __future__ import annotations

from sparsepai.masks.apply import register_channel_masks
from sparsepai.structured.analysis import analyse
from sparsepai.structured.channels import resolve, weight_masks


def element_masks(model, channel_masks, where: str) -> dict:
    """The element masks ``{parameter name: bool mask}`` of ``channel_masks`` on ``model``.

    Args:
        model: the dense network.
        channel_masks: ``{module name: bool (out_channels,)}`` as ``sp.prune(...,
            structured=True)`` returns.
        where: the function (or file) named in error messages.

    Raises:
        ValueError: masks that do not fit the model's channel graph.
    """
    return weight_masks(model, resolve(analyse(model), dict(channel_masks), where))


register_channel_masks(element_masks)
