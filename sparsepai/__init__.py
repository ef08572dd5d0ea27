"""sparsepai: pruning neural networks at initialization.

``import sparsepai`` is cheap: it imports nothing heavy (not even torch). Public names load on
first use.
"""

import importlib

__version__ = "0.1.0"

# public name -> module that defines it
_LAZY = {
    "topk_mask": "sparsepai.ops.topk",
    "kth_largest": "sparsepai.ops.topk",
    "TopkResult": "sparsepai.ops.topk",
    "has_extension": "sparsepai._ext",
    "apply_masks": "sparsepai.masks.apply",
    "save_masks": "sparsepai.masks.io",
    "load_masks": "sparsepai.masks.io",
    "score": "sparsepai.api",
    "prune": "sparsepai.api",
    "slim": "sparsepai.structured.slim",
}
_SUBMODULES = ("autosparse", "distributed", "experiments", "masks", "ops", "optim", "pruning",
               "structured", "triton")

__all__ = sorted(list(_LAZY) + list(_SUBMODULES))


def __getattr__(name):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        module = importlib.import_module(f"sparsepai.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'sparsepai' has no attribute {name!r}")


def __dir__():
    return __all__
