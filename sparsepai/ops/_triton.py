"""Triton kernels. Importing this package never fails: without Triton, ``has_triton()`` is False
and the dispatch table (sparsepai/ops/dispatch.py) does not choose these kernels."""

import functools
import importlib


@functools.lru_cache(maxsize=None)
def has_triton() -> bool:
    """True when Triton imports (installed and not broken)."""
    try:
        importlib.import_module("triton.language")  # imports triton too
    except Exception:  # ImportError, or a broken install that fails on import
        return False
    return True


def require_triton() -> None:
    """Raises RuntimeError when Triton cannot be imported (called by every Triton entry point)."""
    if not has_triton():
        raise RuntimeError("sparsepai: Triton is not installed or fails to import; set "
                           "SPARSEPAI_BACKEND to another backend (cpu, cuda or reference)")
