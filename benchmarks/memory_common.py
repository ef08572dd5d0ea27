"""What the memory benchmark's single-process and FSDP2 parts share: the model sizes and
methods, the Llama config, the resident memory read from /proc, the child processes that re-run
``bench_memory.py``, and the markdown table helpers.

Importing it puts the measured checkout (``BENCH_MEMORY_CODE``, else this one) on ``sys.path``
before everything but this folder, so every ``import sparsepai`` after it loads the version
being measured.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CODE_ENV = "BENCH_MEMORY_CODE"  # the checkout a child process measures
sys.path.insert(0, os.environ.get(CODE_ENV, ROOT))
sys.path.insert(0, HERE)

SCRIPT = os.path.join(HERE, "bench_memory.py")  # the command line every child process re-runs
LOCK = "/tmp/sparsepai-timing.lock"
GiB = 2 ** 30

SIZES = {  # name -> LlamaConfig fields (tied embeddings, vocab 32000)
    "0.1b": dict(hidden_size=768, intermediate_size=2048, num_hidden_layers=12,
                 num_attention_heads=12),
    "0.5b": dict(hidden_size=1536, intermediate_size=4096, num_hidden_layers=16,
                 num_attention_heads=16),
    "0.9b": dict(hidden_size=2048, intermediate_size=5504, num_hidden_layers=16,
                 num_attention_heads=16),
}
METHODS = {  # name -> (sp.prune method, options)
    "magnitude": ("magnitude", {}),
    "random": ("random", {}),
    "snip": ("snip", {}),
    "prospr_first_order": ("prospr", {"first_order": True}),
    "prospr": ("prospr", {"first_order": False}),
}


def proc_status(field: str) -> int:
    """A ``VmRSS``/``VmHWM`` line of /proc/self/status, in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def reset_peak():
    with open("/proc/self/clear_refs", "w") as f:  # 5: reset the peak resident set size
        f.write("5")


def llama_config(size):
    import transformers as tf

    return tf.LlamaConfig(vocab_size=32000, max_position_embeddings=2048,
                          tie_word_embeddings=True, **SIZES[size])


def command_line() -> str:
    """The command this process was started with, as the results record it."""
    return "python benchmarks/bench_memory.py " + " ".join(sys.argv[1:])


def run_child(args, code, *child):
    """``bench_memory.py *child`` in a fresh process measuring the checkout ``code``: its
    result (the last line of its output, JSON), or its error."""
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), **{CODE_ENV: code})
    out = subprocess.run([sys.executable, SCRIPT, *child,
                          "--threads", str(args.threads), "--sparsity", str(args.sparsity),
                          "--repeat", str(args.repeat)],
                         capture_output=True, text=True, env=env, cwd=code)
    if out.returncode != 0:
        return {"error": (out.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def table_header(columns) -> list:
    """A markdown table's header row and rule."""
    return ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]


def error_row(lead, error, width: int) -> str:
    """A row of ``width`` cells: ``lead``, the error, then empty cells."""
    cells = [str(x) for x in lead] + [f"error: {error}"]
    return "| " + " | ".join(cells + [""] * (width - len(cells))) + " |"
