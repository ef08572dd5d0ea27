"""Triton kernels. Importing this package never fails: without Triton, ``has_triton()`` is False
and the features that use these kernels fall back to the C++ ops or the references."""

import functools
import importlib


@functools.lru_cache(maxsize=None)
def has_triton() -> bool:
    try:
        importlib.import_module("triton.language")  # imports triton too
    except Exception:  # ImportError, or a broken install that fails on import
        return False
    return True
