"""The dispatch table: which backend runs each op on each device.

Every op has up to four implementations, found by its name: the C++ CPU kernel (backend
``cpu``), the C++ CUDA kernel (``cuda``), a Triton kernel (``triton``) and a pure-PyTorch
reference (``reference``, also the test oracle):

========================  ====================  =======================  ===========================
ops                       C++ ``cpu``/``cuda``  ``triton``               ``reference``
========================  ====================  =======================  ===========================
``topk_mask``,            csrc/cpu/topk.cpp,    sparsepai/ops/           sparsepai/ops/topk_ref.py
``kth_largest``,          csrc/cuda/topk.cu     topk_triton.py
``key_histogram``,                              (``first_nan``: plain
``threshold_masks``,                            torch)
``first_nan``
``masked_sgd_``,          csrc/cpu/             sparsepai/ops/           sparsepai/ops/
``masked_adamw_``         masked_optim.cpp,     masked_optim_triton.py   masked_optim_ref.py
                          csrc/cuda/
                          masked_optim.cu
``channel_sparse_conv2d`` csrc/cpu/             sparsepai/ops/           sparsepai/ops/
(+ ``_backward``)         channel_sparse.cpp    channel_sparse_triton.py channel_sparse.py
                          (no C++ CUDA)         (as the op's CUDA
                                                kernel)
``sparse_conv2d``,        csrc/cpu/             none                     sparsepai/ops/
``sparse_linear``         sparse_conv.cpp                                 sparse_conv_ref.py
(+ ``_backward``)         (no C++ CUDA)
========================  ====================  =======================  ===========================

Each op family's files share its name: ``topk*``, ``masked_optim*`` (``masked_sgd_`` and
``masked_adamw_``), ``channel_sparse*``, in csrc/cpu, csrc/cuda, sparsepai/ops and tests/ops
(tests/ops/test_<family>*.py run every available backend, forced: tests/ops/grid.py).

Schemas: csrc/ops.cpp. Python faces (argument checks, fake implementations, the call through
this table): sparsepai/ops/topk.py, masked_optim.py, channel_sparse.py, sparse_conv.py,
sparse_linear.py; the distributed driver
sparsepai/ops/topk_dist.py calls the building blocks (``key_histogram``, ``threshold_masks``,
``first_nan``) through the table too.

Choice (``SPARSEPAI_BACKEND`` unset or ``auto``), per op and tensor device:

- CPU tensors: the C++ CPU kernel, else the reference.
- CUDA tensors: the C++ CUDA kernel, else Triton (a CPU-only build of the extension, e.g. pip
  without nvcc, on a GPU machine), else the reference.
- any other device: the reference.

``SPARSEPAI_BACKEND=cpu|cuda|triton|reference`` forces one backend for every op: a call it
cannot serve (no such kernel built, Triton missing, tensors on a device the backend does not run
on) raises ``RuntimeError`` naming the op, the device and the reason, instead of falling back.
``triton`` serves CUDA tensors, and CPU tensors when ``TRITON_INTERPRET=1`` (how the tests run
the Triton path without a GPU). The variable is read once, when the table is first used;
:func:`use_backend` changes the choice inside a process (tests, benchmarks).

Calls a backend does not take (float64 or non-contiguous parameters for the optimizer kernels)
run the reference under ``auto`` and raise under a forced backend: see :func:`unsupported`.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.util
import os

import torch

from sparsepai._ext import has_extension, has_op

BACKENDS = ("cpu", "cuda", "triton", "reference")
_ENV = "SPARSEPAI_BACKEND"

# op -> (Triton implementation, reference), as "module:function"; the C++ kernels are
# torch.ops.sparsepai.<op>. None: no Triton implementation reachable by a plain call
# (channel_sparse_conv2d's Triton kernels are registered as the op's CUDA kernel instead, so that
# autograd goes through the op).
OPS = {
    "topk_mask": ("sparsepai.ops.topk_triton:topk_mask_triton",
                  "sparsepai.ops.topk_ref:topk_mask_ref"),
    "kth_largest": ("sparsepai.ops.topk_triton:kth_largest_triton",
                    "sparsepai.ops.topk_ref:kth_largest_ref"),
    "key_histogram": ("sparsepai.ops.topk_triton:key_histogram_triton",
                      "sparsepai.ops.topk_ref:key_histogram_ref"),
    "threshold_masks": ("sparsepai.ops.topk_triton:threshold_masks_triton",
                        "sparsepai.ops.topk_ref:threshold_masks_ref"),
    "first_nan": ("sparsepai.ops.topk_triton:first_nan_triton",
                  "sparsepai.ops.topk_ref:first_nan_ref"),
    "masked_sgd_": ("sparsepai.ops.masked_optim_triton:masked_sgd_triton",
                    "sparsepai.ops.masked_optim_ref:masked_sgd_ref"),
    "masked_adamw_": ("sparsepai.ops.masked_optim_triton:masked_adamw_triton",
                      "sparsepai.ops.masked_optim_ref:masked_adamw_ref"),
    "channel_sparse_conv2d": (None, "sparsepai.ops.channel_sparse:channel_sparse_conv2d_ref"),
    "sparse_conv2d": (None, "sparsepai.ops.sparse_conv_ref:sparse_conv2d_ref"),
    "sparse_linear": (None, "sparsepai.ops.sparse_conv_ref:sparse_linear_ref"),
}
# ops whose Triton kernels run on CPU tensors under TRITON_INTERPRET=1
_INTERPRETABLE = {"topk_mask", "kth_largest", "key_histogram", "threshold_masks", "first_nan",
                  "masked_sgd_", "masked_adamw_"}
_DEVICE_ORDER = {"cpu": ("cpu", "reference"), "cuda": ("cuda", "triton", "reference")}

# Plain dicts, filled at import (and by use_backend): torch.compile traces dict reads, not
# dispatcher queries.
_TABLE: dict = {}  # (op, device type) -> backend name, or the exception a call raises
_CPP: dict = {}  # (op, "cpu"/"cuda") -> the C++ kernel is compiled (looked up once)
_IMPLS: dict = {}  # "module:function" -> the function
_FILLED: dict = {}  # (use_backend name, TRITON_INTERPRET) -> the table's rows
_override: list = []  # use_backend() stack


def _cpp(op: str, device_type: str) -> bool:
    key = (op, device_type)
    if key not in _CPP:
        # Asked once, before anything registers Python kernels: ops/channel_sparse.py fills
        # channel_sparse_conv2d's CUDA slot with the Triton kernels after asking this table.
        _CPP[key] = has_op(op, device_type)
    return _CPP[key]


@functools.lru_cache(maxsize=None)
def _triton_installed() -> bool:
    # find_spec does not import Triton (~1 s): it is imported when a Triton kernel first runs
    return importlib.util.find_spec("triton") is not None


def available(backend_name: str, op: str, device_type: str) -> bool:
    """Whether ``backend_name`` can run ``op`` on ``device_type`` tensors (forcing aside)."""
    return _why_not(backend_name, op, device_type) is None


def forced() -> str | None:
    """The backend forced by :func:`use_backend` or ``SPARSEPAI_BACKEND``, or None (auto)."""
    if _override:
        name = _override[-1]
    else:
        name = os.environ.get(_ENV, "").strip().lower() or "auto"
    if name == "auto":
        return None
    if name not in BACKENDS:
        raise ValueError(f"sparsepai: {_ENV} must be one of auto, {', '.join(BACKENDS)}; "
                         f"got {name!r}")
    return name


def _why_not(backend: str, op: str, device_type: str) -> str | None:
    """None if ``backend`` can run ``op`` on tensors of ``device_type``, else the reason."""
    if op not in OPS:
        raise KeyError(f"sparsepai: no op {op!r} in the dispatch table")
    if backend == "reference":
        return None
    if backend in ("cpu", "cuda"):
        if device_type != backend:
            return f"the C++ {backend.upper()} kernels do not run on {device_type} tensors"
        if not _cpp(op, backend):
            if not has_extension():
                return "the compiled extension is not loaded"
            return f"the extension was built without a {backend.upper()} kernel for {op}"
        return None
    triton_fn = OPS[op][0]
    if triton_fn is None and not (op == "channel_sparse_conv2d" and device_type == "cuda"):
        return f"{op} has no Triton implementation"
    if op == "channel_sparse_conv2d":
        if not has_extension():
            return "channel_sparse_conv2d's Triton kernels need the compiled extension's schema"
    if not _triton_installed():
        return "Triton is not installed"
    if device_type == "cpu":
        if op not in _INTERPRETABLE:
            return f"{op}'s Triton kernels run on CUDA tensors only"
        if os.environ.get("TRITON_INTERPRET", "0") != "1":
            return "Triton runs on CPU tensors only under TRITON_INTERPRET=1"
        return None
    if device_type != "cuda":
        return f"Triton does not run on {device_type} tensors"
    return None


def _resolve(op: str, device_type: str):
    try:
        force = forced()
    except ValueError as exc:
        return exc
    if force is not None:
        why = _why_not(force, op, device_type)
        if why is None:
            return force
        return RuntimeError(f"sparsepai.{op}: {_ENV}={force} cannot run on {device_type} "
                            f"tensors: {why}")
    for b in _DEVICE_ORDER.get(device_type, ("reference",)):
        if _why_not(b, op, device_type) is None:
            return b
    return "reference"


def _fill():
    # one table per forcing (cheap to switch: benchmarks switch around every timed step)
    key = (_override[-1] if _override else None, os.environ.get("TRITON_INTERPRET", "0"))
    rows = _FILLED.get(key)
    if rows is None:
        rows = _FILLED[key] = {(op, dev): _resolve(op, dev) for op in OPS
                               for dev in ("cpu", "cuda")}
    _TABLE.clear()
    _TABLE.update(rows)


def backend(op: str, device_type: str) -> str:
    """The backend (one of :data:`BACKENDS`) that runs ``op`` on ``device_type`` tensors.

    Raises:
        RuntimeError: the forced backend cannot run it (the message says why).
        ValueError: ``SPARSEPAI_BACKEND`` names no backend.
    """
    b = _TABLE.get((op, device_type))
    if b is None:  # a device type outside the table (meta, mps, ...)
        b = _TABLE[(op, device_type)] = _resolve(op, device_type)
    if isinstance(b, Exception):
        raise b
    return b


def unsupported(op: str, device_type: str, reason: str) -> str:
    """The backend for a call the chosen kernel does not take (``reason`` says why): the
    reference under ``auto``; under a forced kernel backend a ``RuntimeError``."""
    force = forced()
    if force not in (None, "reference"):
        raise RuntimeError(f"sparsepai.{op}: {_ENV}={force} cannot run this call on "
                           f"{device_type} tensors: {reason}")
    return "reference"


def implementation(op: str, backend_name: str):
    """The function of ``backend_name`` for ``op``; C++ kernels are the ``torch.ops`` overloads
    (the dispatcher picks the device's kernel)."""
    if backend_name in ("cpu", "cuda"):
        return getattr(torch.ops.sparsepai, op).default
    where = OPS[op][0 if backend_name == "triton" else 1]
    fn = _IMPLS.get(where)
    if fn is None:
        module, name = where.split(":")
        fn = _IMPLS[where] = getattr(importlib.import_module(module), name)
    return fn


def call(op: str, device_type: str, *args):
    """Runs ``op`` with the backend the table chooses for ``device_type``.

    Every backend takes the op's schema arguments (csrc/ops.cpp) in the same order.
    """
    return implementation(op, backend(op, device_type))(*args)


def table() -> dict:
    """``{op: {device type: backend}}`` as chosen now (an entry that would raise holds the
    message): what scripts/gpu_check.sh reports."""
    out: dict = {}
    for (op, dev), b in sorted(_TABLE.items()):
        out.setdefault(op, {})[dev] = b if isinstance(b, str) else f"error: {b}"
    return out


def explain(op: str, device_type: str) -> tuple[str, list[str]]:
    """Why ``op`` on ``device_type`` tensors runs where it does: ``(backend, skipped)``, the
    backend chosen now (or the message a call would raise) and, for each backend preferred over
    it under ``auto``, why it was passed over (what ``sparsepai info`` prints)."""
    b = _TABLE.get((op, device_type)) or _resolve(op, device_type)
    if isinstance(b, Exception):
        return f"error: {b}", []
    if forced() is not None:
        return b, [f"forced by {'use_backend' if _override else _ENV}"]
    skipped = []
    for pref in _DEVICE_ORDER.get(device_type, ("reference",)):
        if pref == b:
            break
        skipped.append(f"{pref}: {_why_not(pref, op, device_type)}")
    return b, skipped


@contextlib.contextmanager
def use_backend(name: str | None):
    """Force ``name`` (a :data:`BACKENDS` entry, or ``"auto"``/None) inside the block, like
    ``SPARSEPAI_BACKEND`` does for a whole process. Not thread-safe: for tests and benchmarks.

    Note that an optimizer chooses its kernels when it plans a step and keeps that plan while
    its parameters and state stay the same: create it inside the block.
    """
    name = "auto" if name is None else name
    if name != "auto" and name not in BACKENDS:
        raise ValueError(f"sparsepai.ops.dispatch.use_backend: name must be one of auto, "
                         f"{', '.join(BACKENDS)}; got {name!r}")
    _override.append(name)
    _fill()
    try:
        yield
    finally:
        _override.pop()
        _fill()


_fill()
