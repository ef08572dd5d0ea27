"""Imports every method module so that each registers itself (one module per method)."""

from sparsepai.pruning import (  # noqa: F401
    after_training,
    autosparse,
    force,
    grasp,
    prospr,
    simple,
    snip,
    synflow,
)
