"""Probe of the LibTorch stable ABI with sparsepai's CPU kth_largest (kth_largest_stable.cpp).

    python probe.py build OUT.so   compile against the running torch's headers, targeting the
                                   stable ABI of torch 2.10 (TORCH_TARGET_VERSION)
    python probe.py load OUT.so    load it into the running torch (any release >= the target)
                                   and check it against sparsepai's reference
    python probe.py symbols SO...  the torch symbols each binary needs: C++ (mangled, tied to one
                                   release's ABI) against C (the stable shim)

Run from the repository root (the core headers are csrc/core; the reference is sparsepai.ops).
"""

import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
TARGET = "0x020a000000000000"  # torch 2.10: the oldest release whose stable ABI it may use


def build(out):
    import torch
    from torch.utils import cpp_extension as ce

    cmd = [os.environ.get("CXX", "c++"), "-O3", "-std=c++20", "-fPIC", "-shared",
           "-fvisibility=hidden", f"-DTORCH_TARGET_VERSION={TARGET}",
           *[f"-I{p}" for p in ce.include_paths()], f"-I{os.path.join(ROOT, 'csrc')}",
           os.path.join(HERE, "kth_largest_stable.cpp"), "-o", out,
           f"-L{os.path.join(os.path.dirname(torch.__file__), 'lib')}", "-ltorch_cpu", "-lc10"]
    subprocess.run(cmd, check=True)
    print(f"built {out} against torch {torch.__version__} (target {TARGET})")


def load(path):
    import torch

    sys.path.insert(0, ROOT)
    from sparsepai.ops.topk_ref import kth_largest_ref

    torch.ops.load_library(path)
    op = torch.ops.sparsepai_stable.kth_largest
    g = torch.Generator().manual_seed(0)
    cases = 0
    for dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
        for shapes in ([(1000,), (37, 5)], [(300, 400)], [(7,), (0,), (64, 3)]):
            scores = [torch.randn(s, generator=g).to(dtype) for s in shapes]
            scores[0] = scores[0].t() if scores[0].dim() == 2 else scores[0]  # strided
            n = sum(s.numel() for s in scores)
            for k in (1, n // 3 or 1, n):
                for largest in (True, False):
                    got = op(scores, k, largest, 0)
                    want = kth_largest_ref(scores, k, largest, 0)
                    assert torch.equal(got, want), (dtype, shapes, k, largest, got, want)
                    cases += 1
    print(f"loaded into torch {torch.__version__}: kth_largest equals the reference in "
          f"{cases} cases")


def symbols(paths):
    for path in paths:
        out = subprocess.run(["nm", "-D", "--undefined-only", path], capture_output=True,
                             text=True, check=True).stdout.split()
        names = [s for s in out if s not in ("U", "w")]
        cxx = [s for s in names if s.startswith(("_ZN3c10", "_ZN2at", "_ZN5torch", "_ZNK3c10",
                                                 "_ZNK2at", "_ZNK5torch"))]
        shim = [s for s in names if s.startswith(("aoti_torch_", "torch_"))]
        print(f"{os.path.basename(path)}: {len(cxx)} torch C++ symbols, {len(shim)} stable C "
              f"shim symbols")


if __name__ == "__main__":
    {"build": lambda a: build(a[0]), "load": lambda a: load(a[0]),
     "symbols": symbols}[sys.argv[1]](sys.argv[2:])
