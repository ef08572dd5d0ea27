"""Loads the compiled extension ``sparsepai._C`` once, on first use.

Without it (a pure-Python install, or a failed build) every op falls back to its pure-PyTorch
reference in ``sparsepai.ops``, 10-100x slower; ``has_extension()`` tells which one runs, and a
failed load warns once, in one line naming the cause and the fix. ``sparsepai info`` shows the
whole picture (:func:`extension_status`).
"""

from __future__ import annotations

import functools
import importlib
import os
import warnings

PURE_ENV = "SPARSEPAI_PURE_PYTHON"
# how to rebuild the extension against the running torch, from a source checkout
REBUILD = "pip install --no-build-isolation --force-reinstall --no-deps <sparsepai source>"


def pure_python() -> bool:
    """Whether ``SPARSEPAI_PURE_PYTHON=1`` asks for the references only."""
    return os.environ.get(PURE_ENV, "0") == "1"


def build_info() -> dict | None:
    """What ``sparsepai/_build_info.py`` recorded when the extension was built (the torch
    version, compiler, kernels), or None where no build wrote it. Readable when ``_C`` is not."""
    try:
        mod = importlib.import_module("sparsepai._build_info")
    except ImportError:
        return None
    return {k: v for k, v in vars(mod).items() if k.isupper()}


def _diagnose(exc: ImportError) -> tuple[str, str]:
    """(cause, fix) of a failed import of ``sparsepai._C``, each one line."""
    import torch

    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    built = (build_info() or {}).get("TORCH_VERSION")
    running = torch.__version__
    if isinstance(exc, ModuleNotFoundError) and exc.name == "sparsepai._C":
        return ("sparsepai._C was never built (a pure-Python install, or the build was skipped)",
                f"build it against torch {running}: {REBUILD}")
    if "undefined symbol" in text or (built and built != running):
        against = f"torch {built}" if built else "another torch"
        return (f"sparsepai._C was built against {against} but torch {running} is running "
                f"({text})", f"rebuild it against torch {running}: {REBUILD}")
    if "cannot open shared object file" in text:
        return (f"a library sparsepai._C links against is missing ({text})",
                "install the torch (and CUDA runtime) it was built against, or rebuild: "
                + REBUILD)
    return (f"sparsepai._C failed to load ({text})", f"rebuild it: {REBUILD}")


@functools.lru_cache(maxsize=None)
def _load() -> tuple[bool, str | None, str | None]:
    """(loaded, cause, fix): the one attempt to import the extension."""
    if pure_python():
        return False, f"{PURE_ENV}=1 asks for the pure-PyTorch references", f"unset {PURE_ENV}"
    # imported for their side effects: torch's libraries, which the extension links against,
    # then the extension itself, which registers the ops
    importlib.import_module("torch")
    try:
        c = importlib.import_module("sparsepai._C")
    except ImportError as exc:
        cause, fix = _diagnose(exc)
        return False, cause, fix
    _check_release(c)
    return True, None, None


def _release(version: str) -> str:
    return version.split("+")[0]


def _check_release(c) -> None:
    """Warns when the extension loaded into another torch release than its headers': the
    symbols it needs may all exist there (it loads), but torch promises no C++ ABI across
    releases, so a layout that changed would corrupt memory instead of failing."""
    import torch

    built = c.build_info()["torch"]
    if _release(built) != _release(torch.__version__):
        warnings.warn(f"sparsepai: sparsepai._C was built against torch {built} but torch "
                      f"{torch.__version__} is running; it loaded, but torch keeps no C++ ABI "
                      f"across releases. Fix: rebuild it against torch {torch.__version__}: "
                      f"{REBUILD}", RuntimeWarning, stacklevel=4)


def has_extension() -> bool:
    """True when the compiled kernels of ``sparsepai._C`` are loaded.

    The first call that finds them missing (other than under ``SPARSEPAI_PURE_PYTHON=1``) warns
    once, one line: the cause, that every op runs its reference, and the fix.
    """
    loaded, cause, fix = _load()
    if not loaded and not pure_python():
        _warn_once(cause, fix)
    return loaded


@functools.lru_cache(maxsize=None)
def _warn_once(cause: str, fix: str) -> None:
    warnings.warn(f"sparsepai: compiled kernels not loaded: {cause}; every op runs its "
                  f"pure-PyTorch reference (10-100x slower). Fix: {fix}", RuntimeWarning,
                  stacklevel=3)


def extension_status() -> dict:
    """The extension as ``sparsepai info`` reports it.

    Returns:
        ``{"loaded", "cause", "fix", "built_against", "compiler", "kernels", "cpu_isa"}``:
        ``cause``/``fix`` are None when loaded; ``built_against``/``compiler``/``kernels`` come
        from the binary when it loaded, else from ``_build_info.py`` (None where neither
        exists); ``cpu_isa`` is the instruction-set level the CPU kernels run
        (``"baseline"``, ``"AVX2"``, ``"AVX-512"``), None without the extension.
    """
    loaded, cause, fix = _load()
    recorded = build_info() or {}
    out = {"loaded": loaded, "cause": cause, "fix": fix,
           "built_against": recorded.get("TORCH_VERSION"),
           "compiler": recorded.get("COMPILER"), "kernels": recorded.get("KERNELS"),
           "cpu_isa": None}
    if loaded:
        c = importlib.import_module("sparsepai._C")
        binary = c.build_info()
        # the headers' version has no local label (+cu130): prefer the recorded full string
        # where both name the same release
        if not (out["built_against"] or "").startswith(binary["torch"]):
            out["built_against"] = binary["torch"]
        out["compiler"] = out["compiler"] or binary["compiler"]
        out["kernels"] = "CPU + CUDA" if binary["cuda"] else "CPU"
        out["cpu_isa"] = c.cpu_isa()
    return out


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
