"""Package-level behaviour: cheap import, the build's CUDA decision and the pure-Python fallback
(the command line: tests/cli)."""

import os
import shutil
import subprocess
import sys

import pytest

import sparsepai as sp
from sparsepai._ext import has_extension, has_op

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(code, **env):
    e = dict(os.environ, **env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=e,
                          cwd=ROOT, timeout=600)


def test_import_is_cheap():
    p = _run(
        "import sys, sparsepai\n"
        "heavy = [m for m in ('torch', 'torchvision', 'triton', 'matplotlib', 'sklearn')"
        " if m in sys.modules]\n"
        "print(heavy)"
    )
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "[]"


def test_public_names_load_lazily():
    assert callable(sp.topk_mask) and callable(sp.kth_largest)
    assert callable(sp.save_masks) and callable(sp.load_masks) and callable(sp.apply_masks)
    assert sp.TopkResult._fields == ("threshold", "masks", "kept")
    with pytest.raises(AttributeError):
        sp.no_such_name


@pytest.mark.skipif(not has_extension(), reason="compiled extension not built")
def test_cuda_kernels_built_when_a_toolkit_is_present():
    # CI machines have nvcc but no GPU: the CUDA kernels must still be compiled and registered
    if os.environ.get("SPARSEPAI_CUDA", "auto") == "0" or shutil.which("nvcc") is None:
        pytest.skip("no CUDA toolkit, or CUDA disabled for this build")
    assert has_op("topk_mask", "cpu")
    for name in ("topk_mask", "kth_largest", "key_histogram", "threshold_masks", "first_nan"):
        assert has_op(name, "cuda"), name


def test_pure_python_fallback_matches():
    p = _run(
        "import torch, sparsepai as sp\n"
        "from sparsepai._ext import has_extension\n"
        "assert not has_extension()\n"
        "x = [torch.tensor([3., 1., 3., 2.]), torch.tensor([[3., 0.]])]\n"
        "r = sp.topk_mask(x, 3)\n"
        "print(r.masks[0].tolist(), r.masks[1].tolist(), r.threshold.item())",
        SPARSEPAI_PURE_PYTHON="1",
    )
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "[True, False, True, False] [[True, False]] 3.0"
