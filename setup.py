"""Build of sparsepai and its extension ``sparsepai._C``.

Environment switches (all optional)::

    SPARSEPAI_PURE_PYTHON=1        no extension at all; every op runs its pure-PyTorch reference
    SPARSEPAI_CUDA=auto|1|0        CUDA kernels: auto (default) builds them whenever a CUDA
                                   toolkit is found -- no GPU is needed to build; 1 requires a
                                   toolkit; 0 builds the CPU kernels only
    SPARSEPAI_CUDA_ARCHS="8.0;9.0" CUDA architectures (TORCH_CUDA_ARCH_LIST), default sm_80 + sm_90
    CUDA_HOME=/path                CUDA toolkit root; when unset it is read from `nvcc --dryrun`
                                   (the `_HERE_` line), because the nvcc on PATH may be a wrapper
                                   script whose parent folder is not the toolkit root
    SPARSEPAI_DEBUG=1              -O0 -g, for debuggers and sanitizers
    MAX_JOBS=2                     parallel compile jobs for ninja (default 2)

Build with ``pip install --no-build-isolation -e .`` so the extension is compiled against the
torch already installed (an isolated build would fetch another torch).
"""

import glob
import os
import shutil
import subprocess

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def _flag(name, default):
    return os.environ.get(name, default).strip().lower()


def _resolve_cuda_home():
    """The real toolkit root, or None. Must run before torch.utils.cpp_extension is imported."""
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var):
            return os.environ[var]
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        return None
    try:
        out = subprocess.run(
            [nvcc, "--dryrun", "-c", "sparsepai_probe.cu"], capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.SubprocessError):
        return None
    for line in (out.stdout + out.stderr).splitlines():
        # e.g. "#$ _HERE_=/usr/local/cuda-13.0/bin"
        if "_HERE_=" in line:
            here = line.split("_HERE_=", 1)[1].strip()
            root = os.path.dirname(here)
            if os.path.isdir(root):
                return root
    return os.path.dirname(os.path.dirname(os.path.realpath(nvcc)))


def _extensions():
    if _flag("SPARSEPAI_PURE_PYTHON", "0") in ("1", "true", "yes"):
        return [], {}
    want_cuda = _flag("SPARSEPAI_CUDA", "auto")
    cuda_home = _resolve_cuda_home() if want_cuda != "0" else None
    if cuda_home:
        os.environ["CUDA_HOME"] = cuda_home
    if want_cuda == "1" and not cuda_home:
        raise RuntimeError("SPARSEPAI_CUDA=1 but no CUDA toolkit was found (set CUDA_HOME)")
    os.environ.setdefault("MAX_JOBS", "2")
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", os.environ.get("SPARSEPAI_CUDA_ARCHS", "8.0;9.0"))

    from torch.utils import cpp_extension as ce

    debug = _flag("SPARSEPAI_DEBUG", "0") in ("1", "true", "yes")
    opt = ["-O0", "-g"] if debug else ["-O3"]
    # no FMA contraction: the optimizer math then rounds the same on every CPU and ISA level
    cxx = opt + ["-std=c++20", "-fopenmp", "-fvisibility=hidden", "-ffp-contract=off",
           "-fno-math-errno"]  # sqrtf must not set errno, or it cannot be vectorised
    sources = ["csrc/ops.cpp"] + sorted(glob.glob("csrc/cpu/*.cpp"))
    use_cuda = bool(cuda_home) and ce.CUDA_HOME is not None
    if use_cuda:
        sources += sorted(glob.glob("csrc/cuda/*.cu"))
        ext = ce.CUDAExtension(
            "sparsepai._C",
            sources,
            include_dirs=[os.path.join(HERE, "csrc")],
            extra_compile_args={"cxx": cxx, "nvcc": opt + ["-std=c++20", "--expt-relaxed-constexpr"]},
            extra_link_args=["-fopenmp"],
            define_macros=[("SPARSEPAI_WITH_CUDA", "1")],
        )
    else:
        ext = ce.CppExtension(
            "sparsepai._C",
            sources,
            include_dirs=[os.path.join(HERE, "csrc")],
            extra_compile_args={"cxx": cxx},
            extra_link_args=["-fopenmp"],
        )
    print(f"sparsepai: building {'CPU + CUDA' if use_cuda else 'CPU'} kernels"
          + (f" (CUDA_HOME={cuda_home})" if use_cuda else ""))
    return [ext], {"build_ext": ce.BuildExtension.with_options(use_ninja=True)}


ext_modules, cmdclass = _extensions()

setup(
    name="sparsepai",
    version="0.1.0",
    description="Pruning neural networks at initialization: kernels and methods",
    packages=find_packages(include=["sparsepai", "sparsepai.*"]),
    python_requires=">=3.10",
    install_requires=["torch", "tqdm", "safetensors"],
    ext_modules=ext_modules,
    cmdclass=cmdclass,
    entry_points={"console_scripts": ["sparsepai=sparsepai.cli:main"]},
)
