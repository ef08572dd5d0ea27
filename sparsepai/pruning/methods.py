"""Fills the method registry: imports every module of ``sparsepai.pruning`` (a method module
registers itself on import), found with ``pkgutil`` rather than listed by hand, so a new method
is one new file."""

import importlib
import pkgutil

import sparsepai.pruning as _package

for _info in pkgutil.iter_modules(_package.__path__):
    if _info.name != __name__.rpartition(".")[2]:
        importlib.import_module(f"{_package.__name__}.{_info.name}")
