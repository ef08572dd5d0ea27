"""Keep-masks: their one home.

- ``bits``: bit packing (1 bit per weight), the layout the masked optimizer kernels read.
- ``apply``: :func:`apply_masks` puts masks on a model (``MASK_ATTR`` on each parameter).
- ``io``: :func:`save_masks` / :func:`load_masks`, safetensors with JSON metadata.
- ``threshold``: scores to keep-masks (global / per layer / minimum per layer).
- ``ablate``: sanity-check ablations of masks (shuffle within layers, re-initialise, invert).

Names load on first use, so importing one module here never imports the others.
"""

import importlib

_LAZY = {
    "pack_mask": "sparsepai.ops.bits",
    "unpack_mask": "sparsepai.ops.bits",
    "MASK_ATTR": "sparsepai.masks.apply",
    "apply_masks": "sparsepai.masks.apply",
    "save_masks": "sparsepai.masks.io",
    "load_masks": "sparsepai.masks.io",
    "read_masks": "sparsepai.masks.io",
    "shuffle_masks": "sparsepai.masks.ablate",
    "invert_masks": "sparsepai.masks.ablate",
    "reinit_": "sparsepai.masks.ablate",
}

__all__ = sorted(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'sparsepai.masks' has no attribute {name!r}")


def __dir__():
    return __all__
