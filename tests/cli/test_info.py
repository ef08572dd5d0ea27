"""``sparsepai info`` tells the truth in each state: extension loaded, extension missing (its import
fails: never built, or built against another torch), pure Python; and a failed load warns in one
line naming the cause and the fix."""

import json
import os
import subprocess
import sys

import pytest

from sparsepai._ext import has_extension
from tests.cli.helpers import ROOT

# Runs `sparsepai info --json` with the import of sparsepai._C made to fail as given.
_FAIL_IMPORT = """
import sys, warnings
from importlib.abc import MetaPathFinder

class Fail(MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "sparsepai._C":
            {raise_}

sys.meta_path.insert(0, Fail())
warnings.simplefilter("always")
from sparsepai.cli import main
sys.exit(main(sys.argv[1:]))
"""
NEVER_BUILT = 'raise ModuleNotFoundError("No module named \'sparsepai._C\'", name=name)'
ABI_MISMATCH = ('raise ImportError("/site-packages/sparsepai/_C.so: undefined symbol: '
                '_ZN3c1017RegisterOperatorsD1Ev")')


def _info(*args, code=None, **env):
    cmd = [sys.executable, "-c", code, *args] if code else [sys.executable, "-m", "sparsepai",
                                                            *args]
    e = {k: v for k, v in os.environ.items()
         if k not in ("SPARSEPAI_BACKEND", "SPARSEPAI_PURE_PYTHON")}
    e.update(OMP_NUM_THREADS="1", **env)
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600, env=e)


def _json(p):
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


@pytest.mark.skipif(not has_extension(), reason="compiled extension not built")
def test_info_extension_loaded():
    import torch

    info = _json(_info("info", "--json", "--require-extension"))
    ext = info["extension"]
    assert ext["loaded"] and ext["cause"] is None
    assert info["torch"] == torch.__version__
    # the binary's own record (headers' version) agrees with the running torch
    import sparsepai._C as C

    assert torch.__version__.startswith(C.build_info()["torch"])
    assert ext["built_against"].startswith(C.build_info()["torch"])
    assert not info["torch_mismatch"]
    assert ext["cpu_isa"] in ("baseline", "AVX2", "AVX-512")
    # the CPU kernels serve every op on CPU tensors, nothing passed over
    for op, devs in info["ops"].items():
        assert devs["cpu"] == {"backend": "cpu", "skipped": []}, op
    text = _info("info")
    assert text.returncode == 0, text.stderr
    assert "extension              loaded" in text.stdout
    assert "NOT LOADED" not in text.stdout


@pytest.mark.parametrize("raise_, cause", [
    (NEVER_BUILT, "sparsepai._C was never built"),
    (ABI_MISMATCH, "sparsepai._C was built against"),
])
def test_info_extension_missing(raise_, cause):
    code = _FAIL_IMPORT.replace("{raise_}", raise_)
    info = _json(_info("info", "--json", code=code))
    ext = info["extension"]
    assert not ext["loaded"] and ext["cpu_isa"] is None
    assert ext["cause"].startswith(cause), ext["cause"]
    assert "--no-build-isolation" in ext["fix"]
    for op, devs in info["ops"].items():
        assert devs["cpu"]["backend"] == "reference", op
        if op != "channel_sparse_conv2d":
            assert devs["cpu"]["skipped"] == ["cpu: the compiled extension is not loaded"], \
                devs["cpu"]
    # the CI gate fails, naming the cause
    gate = _info("info", "--require-extension", code=code)
    assert gate.returncode == 1
    assert cause in gate.stderr
    text = _info("info", code=code)
    assert "NOT LOADED: " + cause in text.stdout
    # the warning an op raises: one line, the cause and the fix
    warned = [line for line in text.stderr.splitlines() if "RuntimeWarning" in line]
    assert len(warned) == 1, text.stderr
    assert cause in warned[0] and "pure-PyTorch reference" in warned[0], warned[0]
    assert "build it against torch" in warned[0].split("Fix: ")[1], warned[0]


def test_info_pure_python():
    info = _json(_info("info", "--json", SPARSEPAI_PURE_PYTHON="1"))
    ext = info["extension"]
    assert not ext["loaded"]
    assert "SPARSEPAI_PURE_PYTHON=1" in ext["cause"]
    assert all(devs["cpu"]["backend"] == "reference" for devs in info["ops"].values())
    p = _info("info", SPARSEPAI_PURE_PYTHON="1")
    assert "RuntimeWarning" not in p.stderr  # asked for: no warning
    assert _info("info", "--require-extension", SPARSEPAI_PURE_PYTHON="1").returncode == 1


def test_info_forced_backend():
    info = _json(_info("info", "--json", SPARSEPAI_BACKEND="reference"))
    assert info["forced_backend"] == "reference"
    assert all(d["cpu"] == {"backend": "reference", "skipped": ["forced by SPARSEPAI_BACKEND"]}
               for d in info["ops"].values())


_OTHER_RELEASE = """
import sys, warnings
import torch
import sparsepai._C as C
# the extension as it would load beside another torch release than its headers'
C.build_info = lambda: {"torch": "2.0.0", "compiler": "gcc 1.0", "cuda": False}
warnings.simplefilter("always")
from sparsepai.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.skipif(not has_extension(), reason="compiled extension not built")
def test_info_extension_from_another_torch_release():
    p = _info("info", "--json", code=_OTHER_RELEASE)
    info = _json(p)
    assert info["extension"]["loaded"] and info["torch_mismatch"]
    assert info["extension"]["built_against"] == "2.0.0"
    warned = [line for line in p.stderr.splitlines() if "RuntimeWarning" in line]
    assert len(warned) == 1, p.stderr
    assert "built against torch 2.0.0" in warned[0] and "Fix: rebuild it" in warned[0]
    text = _info("info", code=_OTHER_RELEASE).stdout
    assert "WARNING" in text and "built against torch 2.0.0" in text
