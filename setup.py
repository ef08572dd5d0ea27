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

The package metadata is pyproject.toml's ``[project]`` table; this file only describes the
extension. The extension compiles against the torch the build sees: with
``pip install --no-build-isolation .`` the installed one; with build isolation (pip's default)
buildtools/backend.py asks for the same version as the installed one. Next to the extension the
build writes ``sparsepai/_build_info.py`` (the torch it was built against, the compiler, the
kernels), which ``sparsepai info`` and the load-failure warning read.
"""

import glob
import os
import shutil
import subprocess

from setuptools import setup

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
    kernels = "CPU + CUDA" if use_cuda else "CPU"
    print(f"sparsepai: building {kernels} kernels"
          + (f" (CUDA_HOME={cuda_home})" if use_cuda else ""))
    info = _build_info(kernels, use_cuda)
    return [ext], {"build_ext": _with_build_info(ce.BuildExtension.with_options(use_ninja=True),
                                                 info)}


def _compiler_version(cxx):
    try:
        out = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=60)
        return out.stdout.splitlines()[0].strip()
    except (OSError, subprocess.SubprocessError, IndexError):
        return cxx


def _build_info(kernels, use_cuda):
    """What ``sparsepai/_build_info.py`` records about this build."""
    import torch

    cxx = os.environ.get("CXX", "c++")  # what torch.utils.cpp_extension compiles with
    return {
        "TORCH_VERSION": torch.__version__,
        "TORCH_CUDA_VERSION": torch.version.cuda,
        "CUDA_ARCHS": os.environ.get("TORCH_CUDA_ARCH_LIST") if use_cuda else None,
        "KERNELS": kernels,
        "COMPILER": _compiler_version(cxx.split()[0]),
        "DEBUG": _flag("SPARSEPAI_DEBUG", "0") in ("1", "true", "yes"),
    }


def _with_build_info(base, info):
    """``base`` (torch's build_ext) that also writes ``_build_info.py`` next to the extension,
    in the build tree (wheels) and, for in-place and editable builds, in the source tree."""
    text = ('"""What sparsepai._C was built with (written by setup.py; not tracked by git)."""\n\n'
            + "".join(f"{k} = {v!r}\n" for k, v in info.items()))

    class BuildExt(base):
        def run(self):
            super().run()
            dirs = set()
            for inplace in {0, int(bool(self.inplace or getattr(self, "editable_mode", False)))}:
                old, self.inplace = self.inplace, inplace
                try:
                    dirs.add(os.path.dirname(self.get_ext_fullpath("sparsepai._C")))
                finally:
                    self.inplace = old
            for d in dirs:
                os.makedirs(d, exist_ok=True)
                with open(os.path.join(d, "_build_info.py"), "w") as f:
                    f.write(text)

    return BuildExt


ext_modules, cmdclass = _extensions()

# metadata: pyproject.toml
setup(ext_modules=ext_modules, cmdclass=cmdclass)
