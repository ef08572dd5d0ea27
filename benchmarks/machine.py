"""The machine a benchmark measured, as its results record it."""

from __future__ import annotations

import platform
import subprocess


def cpu_name(l3: bool = False) -> str:
    """lscpu's model name with the CPU family/model and vector ISA from /proc/cpuinfo (and, with
    ``l3``, the L3 size), else the platform's processor string. Two hosts named "AMD EPYC" here
    were 3x apart per training step (family 25 with AVX2, 26 with AVX-512), so the name alone
    does not say which machine measured."""
    name, cache = platform.processor() or platform.machine(), "?"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        fields = {k.strip(): v.strip() for k, v in
                  (line.split(":", 1) for line in out.splitlines() if ":" in line)}
        name, cache = fields.get("Model name", name), fields.get("L3 cache", cache)
    except OSError:
        pass
    try:
        with open("/proc/cpuinfo") as f:
            info = {k.strip(): v.strip() for k, v in
                    (line.split(":", 1) for line in f.read().split("\n\n")[0].splitlines()
                     if ":" in line)}
        flags = info.get("flags", "").split()
        isa = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
        name = f"{name} (family {info['cpu family']} model {info['model']}, {isa})"
    except (OSError, KeyError):
        pass
    return f"{name}, L3 {cache}" if l3 else name
