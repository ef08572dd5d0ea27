"""sparsepai: pruning neural networks at initialization.

``import sparsepai`` is cheap: it imports nothing heavy (not even torch). Public names load on
first use.

The stable API is ``__all__``: the kernels (``topk_mask``, ``kth_largest``, ``TopkResult``,
``has_extension``), masks (``apply_masks``, ``save_masks``, ``load_masks``), pruning (``score``,
``prune``), deployment (``slim``, and ``sparsify`` where this build has it) and the ``optim``,
``autosparse`` and ``distributed`` packages. The other packages (``ops``, ``masks``, ``core``,
``pruning``, ``structured``) are the library's inside, importable but free to
change; ``experiments`` holds the lab: the training recipes, sweeps and reports, datasets and the
literature's small models.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# stable public name -> module that defines it
_LAZY = {
    "topk_mask": "sparsepai.ops.topk",
    "kth_largest": "sparsepai.ops.topk",
    "TopkResult": "sparsepai.ops.topk",
    "has_extension": "sparsepai._ext",
    "apply_masks": "sparsepai.api",
    "save_masks": "sparsepai.api",
    "load_masks": "sparsepai.api",
    "score": "sparsepai.api",
    "prune": "sparsepai.api",
    "slim": "sparsepai.structured.slim",
    "sparsify": "sparsepai.sparse",
}
# sparsify's module, where this version has it: listed only if present (never fails at import)
if importlib.util.find_spec(_LAZY["sparsify"]) is None:
    del _LAZY["sparsify"]
# stable public packages
_PUBLIC_PACKAGES = ("autosparse", "distributed", "optim")
# importable packages outside the stable API: the library's inside, and the lab (experiments)
_OTHER_PACKAGES = ("core", "experiments", "masks", "ops", "pruning", "sparse", "structured")

__all__ = sorted(list(_LAZY) + list(_PUBLIC_PACKAGES))

if TYPE_CHECKING:  # what IDEs and type checkers see; at run time the names load lazily
    from sparsepai import autosparse, distributed, optim
    from sparsepai._ext import has_extension
    from sparsepai.api import apply_masks, load_masks, prune, save_masks, score
    from sparsepai.ops.topk import TopkResult, kth_largest, topk_mask
    from sparsepai.structured.slim import slim


def __getattr__(name):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    if name in _PUBLIC_PACKAGES or name in _OTHER_PACKAGES:
        module = importlib.import_module(f"sparsepai.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'sparsepai' has no attribute {name!r}")


def __dir__():
    return sorted(__all__ + ["__version__"] + list(_OTHER_PACKAGES))
