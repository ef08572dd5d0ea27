"""``sparsepai info``: what runs here, as ``python -m xformers.info`` tells it.

The sparsepai and torch versions (running, and the one the extension was built against), the
compiler, the CPU instruction-set level the kernels use, CUDA and Triton, and for every op and
device the backend the dispatch table (sparsepai/ops/dispatch.py) chooses, with the reason for
each faster backend passed over. ``--require-extension`` exits 1 when the compiled kernels did
not load (what CI runs).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import platform
import sys

HELP = "versions, build, CPU/CUDA/Triton, and which backend runs each op"
DESCRIPTION = ("Print the sparsepai and torch versions (running, and built against), the "
               "compiler, the CPU instruction-set level, CUDA/Triton availability, and the "
               "backend that serves each op on each device, with the reason for any fallback.")


def add_arguments(p) -> None:
    p.add_argument("--json", action="store_true", help="one JSON object instead of text")
    p.add_argument("--require-extension", action="store_true",
                   help="exit 1 when the compiled extension is not loaded")


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def collect() -> dict:
    """Everything ``sparsepai info`` prints, as a dict (``--json`` prints it)."""
    import torch

    import sparsepai
    from sparsepai._ext import extension_status
    from sparsepai.ops import dispatch

    ext = extension_status()
    cuda = torch.cuda.is_available()
    triton = importlib.util.find_spec("triton") is not None
    ops = {}
    for op in dispatch.OPS:
        ops[op] = {}
        for dev in ("cpu", "cuda"):
            backend, skipped = dispatch.explain(op, dev)
            ops[op][dev] = {"backend": backend, "skipped": skipped}
    return {
        "sparsepai": sparsepai.__version__,
        "python": platform.python_version(),
        "platform": f"{platform.system()} {platform.machine()}",
        "torch": torch.__version__,
        "extension": ext,
        "torch_mismatch": bool(ext["built_against"]) and ext["loaded"]
        and ext["built_against"].split("+")[0] != torch.__version__.split("+")[0],
        "cuda": {"available": cuda, "torch_cuda": torch.version.cuda,
                 "devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
                 if cuda else []},
        "triton": {"installed": triton, "version": _version("triton") if triton else None},
        "forced_backend": dispatch.forced(),
        "ops": ops,
    }


def _text(info: dict) -> str:
    ext = info["extension"]
    rows = [
        ("sparsepai", info["sparsepai"]),
        ("python", f"{info['python']} ({info['platform']})"),
        ("torch (running)", info["torch"]),
        ("torch (built against)", ext["built_against"] or "unknown (no build record)"),
        ("compiler", ext["compiler"] or "unknown"),
    ]
    if ext["loaded"]:
        rows.append(("extension", f"loaded ({ext['kernels']} kernels)"))
    else:
        rows.append(("extension", f"NOT LOADED: {ext['cause']}"))
        rows.append(("  fix", ext["fix"]))
    if info["torch_mismatch"]:
        rows.append(("  WARNING", f"built against torch {ext['built_against']}, running "
                                  f"{info['torch']}: rebuild"))
    rows.append(("CPU ISA", ext["cpu_isa"] or "n/a (no extension)"))
    cuda = info["cuda"]
    rows.append(("CUDA", f"available: {', '.join(cuda['devices'])}" if cuda["available"]
                 else f"not available (torch built with CUDA {cuda['torch_cuda']})"
                 if cuda["torch_cuda"] else "not available (CPU-only torch)"))
    tri = info["triton"]
    rows.append(("Triton", f"installed ({tri['version']})" if tri["installed"]
                 else "not installed"))
    rows.append(("backend choice", f"forced: {info['forced_backend']}"
                 if info["forced_backend"] else "auto"))
    width = max(len(k) for k, _ in rows) + 2
    lines = [f"{k:<{width}}{v}" for k, v in rows]
    lines += ["", f"{'op':<24}{'device':<8}backend (why not a faster one)"]
    for op, devs in info["ops"].items():
        for dev, row in devs.items():
            why = f"  ({'; '.join(row['skipped'])})" if row["skipped"] else ""
            note = "" if dev == "cpu" or cuda["available"] else " [no CUDA device here]"
            lines.append(f"{op:<24}{dev:<8}{row['backend']}{why}{note}")
    return "\n".join(lines)


def run(args) -> int:
    info = collect()
    print(json.dumps(info, indent=2) if args.json else _text(info))
    if args.require_extension and not info["extension"]["loaded"]:
        print(f"sparsepai info: error: the compiled extension is not loaded: "
              f"{info['extension']['cause']}", file=sys.stderr)
        return 1
    return 0
