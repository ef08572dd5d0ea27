"""Imports every method module so that each registers itself (one module per method)."""

import importlib

MODULES = ("after_training", "autosparse", "force", "grasp", "prospr", "simple", "snip", "synflow")

for _name in MODULES:
    importlib.import_module(f"sparsepai.pruning.{_name}")
