"""Package-level behaviour: cheap import, the build's CUDA decision, the pure-Python fallback,
and the command line."""

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


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "sparsepai", *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=600)


def test_cli_help_describes_every_command():
    p = _cli("--help")
    assert p.returncode == 0
    for cmd, option in (("demo", "--sparsities"), ("prune", "--method"), ("train", "--masks"),
                        ("sweep", "--seeds"), ("bench", "--sizes"), ("irp", "--rounds"),
                        ("ccc", "--json"), ("train-predictor", "--backbone")):
        assert cmd in p.stdout
        p2 = _cli(cmd, "--help")
        assert p2.returncode == 0 and option in p2.stdout, p2.stdout


def test_cli_demo_on_a_tiny_budget(tmp_path):
    out = tmp_path / "demo"
    p = _cli("demo", "--epochs", "1", "--seeds", "0", "--methods", "magnitude", "snip",
             "--sparsities", "0.9", "--out", str(out))
    assert p.returncode == 0, p.stderr
    assert "magnitude" in p.stdout and "snip" in p.stdout and "dense" in p.stdout
    for f in ("config.json", "runs.jsonl", "results.csv", "results.json", "table.txt",
              "accuracy_vs_sparsity.png"):
        assert (out / f).exists(), f
    import json

    runs = [json.loads(x) for x in (out / "runs.jsonl").read_text().splitlines()]
    assert {(r["method"], r["sparsity"]) for r in runs} == {("dense", 0.0), ("magnitude", 0.9),
                                                            ("snip", 0.9)}
    for r in runs:
        if r["method"] != "dense":
            assert r["kept"] == r["prunable"] - round(0.9 * r["prunable"])
    # a second run resumes: nothing to redo
    p = _cli("demo", "--epochs", "1", "--seeds", "0", "--methods", "magnitude", "snip",
             "--sparsities", "0.9", "--out", str(out))
    assert p.returncode == 0 and len((out / "runs.jsonl").read_text().splitlines()) == 3


def test_cli_prune_then_train(tmp_path):
    masks = tmp_path / "m.safetensors"
    p = _cli("prune", "--method", "prospr", "--sparsity", "0.8", "--option", "meta_steps=1",
             "--out", str(masks))
    assert p.returncode == 0, p.stderr
    assert "kept" in p.stdout and masks.exists()
    p = _cli("train", "--masks", str(masks), "--epochs", "1", "--out", str(tmp_path / "r.json"))
    assert p.returncode == 0, p.stderr
    assert "test accuracy" in p.stdout
    # the same file against another architecture: a clear error
    p = _cli("train", "--model", "lenet5", "--masks", str(masks), "--epochs", "1")
    assert p.returncode != 0 and "different model" in p.stderr


def test_cli_rejects_bad_sparsity():
    p = _cli("prune", "--method", "snip", "--sparsity", "1.5")
    assert p.returncode == 2 and "sparsity must be in [0, 1)" in p.stderr
    p = _cli("prune", "--method", "nosuch", "--sparsity", "0.5")
    assert p.returncode != 0 and "valid methods" in p.stderr


def test_cli_structured_prune_slim_then_train(tmp_path):
    masks = tmp_path / "c.safetensors"
    slim = tmp_path / "slim.safetensors"
    p = _cli("prune", "--structured", "--method", "snip", "--sparsity", "0.7", "--out",
             str(masks), "--slim-out", str(slim))
    assert p.returncode == 0, p.stderr
    assert "structured" in p.stdout and masks.exists() and slim.exists()
    p = _cli("train", "--masks", str(masks), "--epochs", "1")
    assert p.returncode == 0, p.stderr
    assert "training the slim model" in p.stdout and "test accuracy" in p.stdout
    p = _cli("train", "--model", "lenet5", "--masks", str(masks), "--epochs", "1")
    assert p.returncode != 0 and "different model" in p.stderr
