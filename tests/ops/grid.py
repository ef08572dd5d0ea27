"""The op tests' grid: devices x the backends that can run an op there.

Each cell forces its backend through the dispatch table (``sparsepai.ops.dispatch.use_backend``),
so a test of an op runs the C++ CPU kernel, the C++ CUDA kernel and the Triton kernels each in
turn, and a kernel that is missing is a skipped cell that names why (the table's reason), never
a pass of the reference compared with itself. The reference is the oracle, not a cell.

Triton on CPU tensors means Triton's interpreter (``TRITON_INTERPRET=1``), far too slow for
every test: its cells are in the grid only with ``SPARSEPAI_TEST_INTERPRETER=1``; the Triton
tests (tests/ops/test_*_triton.py) run the kernels under the interpreter on small inputs, and
on a GPU the ``cuda-triton`` cells run them all.

A test module opts in with ``OPS = (op names of the dispatch table, ...)``; tests/ops/conftest.py
then parametrizes every test of it over :func:`cells` (tests taking ``device``) or over the CPU
cells (the others, which build CPU tensors).
"""

from __future__ import annotations

import os

import pytest
import torch

from sparsepai.ops import dispatch

DEVICES = ("cpu",) + (("cuda",) if torch.cuda.is_available() else ())
KERNEL_BACKENDS = ("cpu", "cuda", "triton")
INTERPRETER = os.environ.get("SPARSEPAI_TEST_INTERPRETER") == "1"


def why_not(backend: str, ops, device: str) -> str | None:
    """None if ``backend`` runs every op of ``ops`` on ``device`` tensors, else the reason."""
    for op in ops:
        why = dispatch._why_not(backend, op, device)
        if why is not None:
            return why
    return None


def cells(ops, devices=DEVICES) -> list:
    """``pytest.param(device, backend)`` for every device and kernel backend that serves it
    (C++ kernels serve their own device only; Triton on CPU: see above); a backend that cannot
    run ``ops`` there is a skipped cell naming the reason."""
    out = []
    for dev in devices:
        for b in KERNEL_BACKENDS:
            if b in ("cpu", "cuda") and b != dev:
                continue
            if (b, dev) == ("triton", "cpu") and not INTERPRETER:
                continue
            why = why_not(b, ops, dev)
            marks = [pytest.mark.skip(reason=f"{b} backend on {dev}: {why}")] if why else []
            out.append(pytest.param(dev, b, id=f"{dev}-{b}", marks=marks))
    return out
