"""The dispatch table: the automatic choice, SPARSEPAI_BACKEND / use_backend forcing, and the
clear errors of a forced backend that cannot run a call."""

import os
import subprocess
import sys

import pytest
import torch

import sparsepai as sp
from sparsepai._ext import has_op
from sparsepai.ops import dispatch
from sparsepai.ops.topk_ref import topk_mask_ref
from sparsepai.optim import MaskedSGD

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TRITON = dispatch._triton_installed()


def _run(code, **env):
    full = {k: v for k, v in os.environ.items() if k not in ("SPARSEPAI_BACKEND",
                                                             "TRITON_INTERPRET")}
    full.update(env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, env=full, timeout=300)


def test_automatic_choice_follows_what_is_built():
    if dispatch.forced() is not None:
        pytest.skip("SPARSEPAI_BACKEND is set for this run")
    for op in dispatch.OPS:
        want_cpu = "cpu" if has_op(op, "cpu") else "reference"
        assert dispatch.backend(op, "cpu") == want_cpu, op
        if dispatch._cpp(op, "cuda"):
            want_cuda = "cuda"
        elif TRITON and (dispatch.OPS[op][0] is not None
                         or (op == "channel_sparse_conv2d" and sp.has_extension())):
            want_cuda = "triton"  # the CUDA fallback of a CPU-only build
        else:
            want_cuda = "reference"
        assert dispatch.backend(op, "cuda") == want_cuda, op
        assert dispatch.backend(op, "meta") == "reference"
    # table() reports the same choices
    assert dispatch.table()["topk_mask"]["cpu"] == dispatch.backend("topk_mask", "cpu")


def test_forcing_the_reference_gives_the_same_masks():
    x = [torch.randn(300), torch.randint(0, 3, (17, 5)).float()]
    with dispatch.use_backend("reference"):
        assert {dispatch.backend(op, "cpu") for op in dispatch.OPS} == {"reference"}
        res = sp.topk_mask(x, 100)
    want = topk_mask_ref(x, 100)[1]
    assert all(torch.equal(a, b) for a, b in zip(res.masks, want))
    if dispatch.forced() is None:
        assert dispatch.backend("topk_mask", "cpu") == ("cpu" if has_op("topk_mask", "cpu")
                                                         else "reference")


def test_a_forced_backend_that_cannot_run_is_a_clear_error():
    x = [torch.randn(10)]
    with dispatch.use_backend("cuda"):  # CPU tensors: never the CUDA kernels
        with pytest.raises(RuntimeError, match=r"sparsepai.topk_mask: SPARSEPAI_BACKEND=cuda "
                                               r"cannot run on cpu tensors: the C\+\+ CUDA"):
            sp.topk_mask(x, 3)
        with pytest.raises(RuntimeError, match="sparsepai.kth_largest: SPARSEPAI_BACKEND=cuda"):
            sp.kth_largest(x, 3)
    with dispatch.use_backend("triton"), pytest.raises(RuntimeError, match="channel_sparse"):
        dispatch.backend("channel_sparse_conv2d", "cpu")  # its Triton kernels are CUDA-only
    with pytest.raises(ValueError, match="use_backend: name must be one of"):
        with dispatch.use_backend("gpu"):
            pass


@pytest.mark.skipif(not has_op("masked_sgd_", "cpu"), reason="C++ CPU kernels not built")
def test_forced_kernel_refuses_what_only_the_reference_takes():
    p = torch.nn.Parameter(torch.randn(8, 8, dtype=torch.float64))
    p.grad = torch.randn_like(p)
    with dispatch.use_backend("cpu"):
        opt = MaskedSGD([p], [torch.rand(8, 8) < 0.5], lr=0.1)
        with pytest.raises(RuntimeError, match=r"masked_sgd_: SPARSEPAI_BACKEND=cpu cannot run "
                                               r"this call on cpu tensors: torch.float64"):
            opt.step()
    opt = MaskedSGD([p], [torch.rand(8, 8) < 0.5], lr=0.1)  # auto: the reference takes it
    opt.step()


_PROBE = (
    "import torch, sparsepai as sp\n"
    "from sparsepai.ops import dispatch\n"
    "print(dispatch.backend('topk_mask', 'cpu'), dispatch.backend('masked_sgd_', 'cpu'))\n"
    "r = sp.topk_mask([torch.tensor([3., 1., 3., 2.]), torch.tensor([[3., 0.]])], 3)\n"
    "print(r.masks[0].tolist(), r.masks[1].tolist(), r.threshold.item())\n"
)


@pytest.mark.skipif(not TRITON, reason="Triton not installed")
def test_environment_variable_forces_triton_on_cpu_under_the_interpreter():
    p = _run(_PROBE, SPARSEPAI_BACKEND="triton", TRITON_INTERPRET="1")
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines() == ["triton triton",
                                     "[True, False, True, False] [[True, False]] 3.0"]
    p = _run(_PROBE, SPARSEPAI_BACKEND="triton")  # no interpreter: Triton needs a GPU
    assert p.returncode != 0
    assert ("SPARSEPAI_BACKEND=triton cannot run on cpu tensors: Triton runs on CPU tensors only "
            "under TRITON_INTERPRET=1") in p.stderr


def test_environment_variable_reference_and_bad_values():
    p = _run(_PROBE, SPARSEPAI_BACKEND="Reference")
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines()[0] == "reference reference"
    p = _run(_PROBE, SPARSEPAI_BACKEND="gpu")
    assert p.returncode != 0
    assert ("ValueError: sparsepai: SPARSEPAI_BACKEND must be one of auto, cpu, cuda, triton, "
            "reference; got 'gpu'") in p.stderr
