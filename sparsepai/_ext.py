"""Loads the compiled extension ``sparsepai._C`` once, on first use.

Without it (a pure-Python install, or a failed build) every op falls back to its pure-PyTorch
reference in ``sparsepai.ops``; ``has_extension()`` tells which one runs.
"""

import functools
import importlib
import os
import warnings


@functools.lru_cache(maxsize=None)
def has_extension() -> bool:
    """True when the compiled kernels of ``sparsepai._C`` are loaded."""
    if os.environ.get("SPARSEPAI_PURE_PYTHON", "0") == "1":
        return False
    # imported for their side effects: torch's libraries, which the extension links against,
    # then the extension itself, which registers the ops
    importlib.import_module("torch")
    try:
        importlib.import_module("sparsepai._C")
    except ImportError as exc:
        warnings.warn(
            f"sparsepai: compiled kernels unavailable ({exc}); using the pure-PyTorch references",
            RuntimeWarning,
            stacklevel=2,
        )
        return False
    return True


def has_op(name: str, device_type: str) -> bool:
    """True when op ``sparsepai::name`` has a kernel for ``device_type`` ("cpu", "cuda")."""
    if not has_extension():
        return False
    import torch

    key = {"cpu": "CPU", "cuda": "CUDA"}.get(device_type)
    if key is None:
        return False
    try:
        return torch._C._dispatch_has_kernel_for_dispatch_key(f"sparsepai::{name}", key)
    except RuntimeError:  # the op is not in this build of the extension (a stale build)
        return False
