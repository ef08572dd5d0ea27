"""Every Triton kernel compiles to PTX for sm_80 and sm_90 without a GPU.

The interpreter (TRITON_INTERPRET=1) runs the kernels' logic on the CPU but accepts code the
real compiler rejects (types, shapes of tl.dot, constexpr misuse); compiling ahead of time for
the CUDA targets catches those here, where no GPU exists.
"""

import json
import os
import subprocess
import sys

import pytest

from sparsepai.ops._triton import has_triton

pytestmark = pytest.mark.skipif(not has_triton(), reason="triton not installed")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NAMES = ["conv_fwd", "conv_grad_input", "conv_grad_weight", "masked_sgd", "masked_adamw",
         "key_hist", "key_hist_f64", "tie_count", "mask_budget"]


def _compile(fn, types, constexprs, arch):
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    sig = {}
    for i, a in enumerate(fn.arg_names):
        sig[a] = "constexpr" if a in constexprs else types.get(a, "i32")
    src = ASTSource(fn=fn, signature=sig,
                    constexprs={(fn.arg_names.index(k),): v for k, v in constexprs.items()})
    k = triton.compile(src, target=GPUTarget("cuda", arch, 32))
    assert ".entry" in k.asm["ptx"]


def _kernels():
    from sparsepai.ops import channel_sparse_triton as cs
    from sparsepai.ops import masked_optim_triton as mo
    from sparsepai.ops import topk_triton as tk

    conv = dict(KH=3, KW=3, BM=32, BN=16, BK=16)
    idx = {"in_idx": "*i64", "out_idx": "*i64"}
    f32 = "*fp32"
    f64 = dict(KEY_BITS=64, ABS_INF=0x7FF0000000000000, BLOCK=1024)
    sgd_f = {a: "fp32" for a in ("lr", "sign", "wd", "buf_keep", "grad_gain", "nest_b")}
    adam_f = {a: "fp32" for a in ("sign", "decay", "step_size", "bc2_sqrt_inv", "beta1", "beta2",
                                  "eps")}
    return {
        "conv_fwd": (cs._fwd_kernel, dict(idx, x=f32, w=f32, b=f32, y=f32),
                     dict(conv, HAS_BIAS=True)),
        "conv_grad_input": (cs._grad_input_kernel, dict(idx, g=f32, w=f32, gx=f32), conv),
        "conv_grad_weight": (cs._grad_weight_kernel, dict(idx, g=f32, x=f32, gw=f32), conv),
        "masked_sgd": (mo._masked_sgd_kernel,
                       dict(sgd_f, p_ptr="*bf16", g_ptr="*bf16", b_ptr="*bf16", w_ptr="*i64",
                            n="i64"),
                       dict(HAS_MASK=True, MOMENTUM=True, NESTEROV=True, BLOCK=1024)),
        "masked_adamw": (mo._masked_adamw_kernel,
                         dict(adam_f, p_ptr=f32, g_ptr=f32, m_ptr=f32, v_ptr=f32, x_ptr=f32,
                              w_ptr="*i64", n="i64"),
                         dict(HAS_MASK=True, AMSGRAD=True, BLOCK=1024)),
        "key_hist": (tk._key_hist_kernel,
                     dict(x_ptr="*i32", n="i64", hist_ptr="*i64", shift="i32", prefix="i64",
                          hmask="i64"),
                     dict(KEY_BITS=32, ABS_INF=0x7F800000, BITS=11, HAS_PREFIX=True,
                          NAN_HIGH=False, LARGEST=True, BLOCK=1024)),
        "key_hist_f64": (tk._key_hist_kernel,
                         dict(x_ptr="*i64", n="i64", hist_ptr="*i64", shift="i32", prefix="i64",
                              hmask="i64"),
                         dict(f64, BITS=16, HAS_PREFIX=True, NAN_HIGH=True, LARGEST=False)),
        "tie_count": (tk._tie_count_kernel,
                      dict(x_ptr="*i16", n="i64", t="i64", counts_ptr="*i64"),
                      dict(KEY_BITS=16, ABS_INF=0x7C00, NAN_HIGH=False, LARGEST=True,
                           BLOCK=1024)),
        "mask_budget": (tk._mask_kernel,
                        dict(x_ptr="*i64", n="i64", t="i64", out_ptr="*u8", before_ptr="*i64",
                             budget="i64"),
                        dict(f64, NAN_HIGH=False, LARGEST=True, TIES=2)),
    }


def _compile_all():
    """Run in a child process: the tests' TRITON_INTERPRET=1 turns kernels into interpreted
    functions, which the compiler does not take."""
    out = {}
    for name, (fn, types, constexprs) in _kernels().items():
        for arch in (80, 90):
            try:
                _compile(fn, types, constexprs, arch)
                out[f"{name}-{arch}"] = "ok"
            except Exception as exc:  # reported per kernel by the tests
                out[f"{name}-{arch}"] = f"{type(exc).__name__}: {exc}"[:2000]
    print(json.dumps(out))


@pytest.fixture(scope="module")
def compiled():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    code = "from tests.ops.test_compile_ptx import _compile_all; _compile_all()"
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       cwd=ROOT, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("arch", [80, 90])
@pytest.mark.parametrize("name", NAMES)
def test_kernel_compiles_to_ptx(compiled, name, arch):
    assert compiled[f"{name}-{arch}"] == "ok"
