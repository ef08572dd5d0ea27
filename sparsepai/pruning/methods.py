"""Imports every method module so that each registers itself (one module per method)."""

from sparsepai.pruning import force, grasp, prospr, simple, snip, synflow  # noqa: F401
