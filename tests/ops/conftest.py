"""Op tests run on the grid of tests/ops/grid.py: every available backend, forced."""

import pytest

from sparsepai.ops import dispatch
from tests.ops import grid


@pytest.hookimpl(tryfirst=True)
def pytest_generate_tests(metafunc):
    ops = getattr(metafunc.module, "OPS", None)
    if not ops:
        return
    if "device" in metafunc.fixturenames:
        metafunc.parametrize(("device", "backend"), grid.cells(ops))
    else:
        metafunc.parametrize("backend", [pytest.param(*p.values[1:], id=p.id, marks=p.marks)
                                         for p in grid.cells(ops, devices=("cpu",))])


@pytest.fixture
def backend():
    """The backend a grid cell forces (None outside the grid: the table's own choice)."""
    return None


@pytest.fixture(autouse=True)
def _forced_backend(backend):
    if backend is None:
        yield
        return
    with dispatch.use_backend(backend):
        yield
