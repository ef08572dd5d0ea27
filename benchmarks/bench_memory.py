"""Peak memory and time of pruning at initialization on Llama models built from a config, and the
channel graph of a Llama-3-8B config built on the meta device.

For each model size and method, one fresh process builds the model (float32, random init, tied
embeddings), reads its resident memory, resets the peak (``/proc/self/clear_refs``), runs
``sp.prune(model, method, sparsity, data)`` and reads the peak resident memory (``VmHWM``) and
the time. Reported against:

- ``model``: the process's resident memory with the model built (the torch runtime included),
  what the peak is divided by (``ratio``);
- ``floor``: ``model`` + the masks (one byte per prunable weight) + what the method cannot do
  without: SNIP the gradients of the prunable weights, first-order ProsPr one stepped copy of
  every parameter, full ProsPr one copy per inner step plus the meta-loss's (the unrolled
  weights its meta-gradient differentiates through), random its scores (4 bytes each);
- SNIP's time against one forward + backward of the same batch (measured after pruning).

The data is one 64-token sequence per batch (ProsPr reads meta_steps + 1 = 4 batches). Sizes:
``0.1b``, ``0.5b``, ``0.9b`` (the 0.88B Llama: hidden 2048, intermediate 5504, 16 layers,
16 heads, vocab 32000). Full ProsPr (second order through its 3 inner steps) runs at 0.1B only.

    python benchmarks/bench_memory.py                      # every size and method, the 8B graph
    python benchmarks/bench_memory.py --sizes 0.9b --methods magnitude,snip
    python benchmarks/bench_memory.py --code ../other-checkout --tag before   # another version
    python benchmarks/bench_memory.py --fsdp 2 --sizes 0.9b --steps 0         # across ranks

``--fsdp N``: magnitude, SNIP and first-order ProsPr across N FSDP2 ranks, each rank's peak
against its shard's share of the single-process peak (memory_fsdp.py says how). Results:
benchmarks/results/memory_fsdp.{json,md}. What both parts share (sizes, methods, the Llama
config, /proc readings, the child processes, table helpers) is in memory_common.py.

Holds /tmp/sparsepai-timing.lock while measuring and runs one process at a time (the 0.88B
cases need up to ~11 GiB). Results: benchmarks/results/memory.{json,md} with the command, the
CPU and the load average.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # its siblings
from machine import cpu_name  # noqa: E402
from memory_common import (  # noqa: E402
    GiB, HERE, LOCK, METHODS, ROOT, SIZES, command_line, error_row, llama_config, proc_status,
    reset_peak, run_child, table_header)
from memory_fsdp import fsdp_main, fsdp_rank  # noqa: E402

OUT = os.path.join(HERE, "results")
FULL_PROSPR_SIZES = ("0.1b",)
LLAMA3_8B = dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                 num_attention_heads=32, num_key_value_heads=8, vocab_size=128256,
                 max_position_embeddings=8192, tie_word_embeddings=False)


def _llama(size):
    import torch
    import transformers as tf

    torch.manual_seed(0)
    return tf.LlamaForCausalLM(llama_config(size))


def one(size: str, method: str, sparsity: float, threads: int, repeat: int,
        timing: bool = True) -> dict:
    """One method on one model size, in this (fresh) process: the peak of the first
    ``sp.prune``, then ``repeat`` more rounds of one forward + backward and one ``sp.prune``,
    interleaved (``*_median``: the medians over those rounds); ``timing=False``: the peak
    only."""
    import gc
    import statistics

    import torch
    from transformers import LlamaForCausalLM  # noqa: F401 (runtime, measured: ~0.2 GiB)

    import sparsepai as sp
    from sparsepai.core.loss import cross_entropy
    from sparsepai.core.prunable import prunable_names

    torch.set_num_threads(threads)
    gc.collect()
    rss_runtime = proc_status("VmRSS")
    model = _llama(size)
    g = torch.Generator().manual_seed(1)
    data = [(ids, ids) for ids in (torch.randint(0, 32000, (1, 64), generator=g)
                                   for _ in range(4))]
    name, opts = METHODS[method]
    names = prunable_names(model)
    params = dict(model.named_parameters())
    n_prunable = sum(params[n].numel() for n in names)
    n_params = sum(p.numel() for p in model.parameters())
    gc.collect()
    rss_model = proc_status("VmRSS")
    reset_peak()
    t0, c0 = time.perf_counter(), time.process_time()
    masks = sp.prune(model, name, sparsity, data, **opts)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    peak = proc_status("VmHWM")
    kept = sum(int(m.sum()) for m in masks.values())
    assert kept == n_prunable - round(sparsity * n_prunable)
    del masks
    if not timing:
        return {"size": size, "method": method, "sparsity": sparsity, "params": n_params,
                "prunable": n_prunable, "seconds": seconds, "rss_runtime": rss_runtime,
                "rss_model": rss_model, "peak": peak, "ratio": peak / rss_model}
    gc.collect()
    weights = [params[n] for n in names]

    def fwd_bwd_once():  # one forward + backward of the first batch: (wall, CPU) seconds
        t0, c0 = time.perf_counter(), time.process_time()
        loss = cross_entropy(model(input_ids=data[0][0]).logits, data[0][1])
        torch.autograd.grad(loss, weights)
        return time.perf_counter() - t0, time.process_time() - c0

    def prune_once():
        t0, c0 = time.perf_counter(), time.process_time()
        sp.prune(model, name, sparsity, data, **opts)
        return time.perf_counter() - t0, time.process_time() - c0

    fb = [fwd_bwd_once()]
    again = []
    for _ in range(repeat):
        again.append(prune_once())
        fb.append(fwd_bwd_once())
    fwd_bwd = [w for w, _ in fb]
    steps = 3
    extra = {"magnitude": 0, "random": 4 * n_prunable, "snip": 4 * n_prunable,
             "prospr_first_order": 4 * n_params, "prospr": 4 * n_params * (steps + 1)}[method]
    floor = rss_model + n_prunable + extra
    return {"size": size, "method": method, "sparsity": sparsity, "params": n_params,
            "prunable": n_prunable, "seconds": seconds, "fwd_bwd_seconds": fwd_bwd[0],
            "seconds_median": statistics.median(w for w, _ in again) if again else None,
            "fwd_bwd_median": statistics.median(fwd_bwd), "repeat": repeat,
            # CPU seconds (all threads): what contention from other jobs distorts least
            "cpu_seconds": cpu, "cpu_seconds_median":
                statistics.median(c for _, c in again) if again else None,
            "fwd_bwd_cpu_median": statistics.median(c for _, c in fb),
            "rss_runtime": rss_runtime, "rss_model": rss_model, "peak": peak, "floor": floor,
            "ratio": peak / rss_model, "floor_ratio": floor / rss_model,
            "over_floor": peak / floor}


def _llama_count(h, inter, layers, heads, kv, head_dim, vocab, tied) -> int:
    """Parameters of a Llama from its config, counted by hand (the independent check)."""
    attn = h * heads * head_dim + 2 * h * kv * head_dim + heads * head_dim * h
    per_layer = attn + 3 * h * inter + 2 * h
    return vocab * h * (1 if tied else 2) + layers * per_layer + h


def graph8b(threads: int) -> dict:
    """The channel graph of a Llama-3-8B config on the meta device, and its slim model."""
    import torch
    import transformers as tf

    import sparsepai as sp
    from sparsepai.structured.graph import analyse

    torch.set_num_threads(threads)
    c = LLAMA3_8B
    with torch.device("meta"):
        model = tf.LlamaForCausalLM(tf.LlamaConfig(**c))
    ids = {"input_ids": torch.zeros(1, 16, dtype=torch.long)}
    t0 = time.perf_counter()
    graph = analyse(model, ids)
    seconds = time.perf_counter() - t0
    groups = graph.prunable_groups()
    heads = [g for g in groups if g.expand]
    mlp = [g for g in groups if not g.expand]
    t0 = time.perf_counter()
    masks = sp.prune(model, "random", 0.5, structured=True, unit="channels", scope="layer",
                     example_inputs=ids)
    prune_seconds = time.perf_counter() - t0
    small = sp.slim(model, masks)
    hd = c["hidden_size"] // c["num_attention_heads"]
    dense = _llama_count(c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"],
                         c["num_attention_heads"], c["num_key_value_heads"], hd,
                         c["vocab_size"], False)
    # half of every layer's key/value heads (with their query heads) and MLP features
    want = _llama_count(c["hidden_size"], c["intermediate_size"] // 2, c["num_hidden_layers"],
                        c["num_attention_heads"] // 2, c["num_key_value_heads"] // 2, hd,
                        c["vocab_size"], False)
    got = sum(p.numel() for p in small.parameters())
    return {"graph_seconds": seconds, "prune_seconds": prune_seconds,
            "peak": proc_status("VmHWM"), "head_groups": len(heads),
            "kv_heads_per_group": sorted({g.size for g in heads}),
            "mlp_groups": len(mlp), "mlp_features": sorted({g.size for g in mlp}),
            "dense_params": sum(p.numel() for p in model.parameters()),
            "dense_params_expected": dense, "slim_params": got, "slim_params_expected": want,
            "slim_on_meta": all(p.is_meta for p in small.parameters())}


def _med(x) -> str:
    return f" ({x:.2f})" if x is not None else ""


def _cpu(r) -> str:
    if "cpu_seconds" not in r:
        return ""
    c = r["cpu_seconds_median"] if r.get("cpu_seconds_median") is not None else r["cpu_seconds"]
    return f"{c:.1f} / {r['fwd_bwd_cpu_median']:.1f}"


def _table(rec) -> str:
    lines = [f"# Pruning memory ({rec['cpu']}, {rec['threads']} threads)", "",
             *[f"`{c}`" for c in rec.get("commands", [rec.get("command")])], "",
             f"Load average before: {rec['load_before']}. Sparsity {rec['sparsity']}. "
             "`model`: resident memory with the model built (torch runtime included); "
             "`peak`: resident peak during `sp.prune`; `floor`: model + masks + the method's "
             "inherent buffers.", "",
             "`time`: the first `sp.prune` of the process (median of the repeats after it); "
             "`fwd+bwd`: one forward and backward of the batch after it (median over the "
             "process); `CPU s`: the same in CPU seconds of all threads (medians), which other "
             "jobs on the machine distort least.", "",
             *table_header(["code", "size", "params", "method", "time s", "fwd+bwd s",
                            "CPU s prune / fwd+bwd", "model GiB", "peak GiB", "peak / model",
                            "floor / model", "peak / floor"])]
    for r in rec["runs"]:
        if "error" in r:
            lines.append(error_row([r["tag"], r["size"], "", r["method"]], r["error"], 12))
            continue
        lines.append(
            f"| {r['tag']} | {r['size']} | {r['params'] / 1e9:.2f}B | {r['method']} | "
            f"{r['seconds']:.2f}{_med(r.get('seconds_median'))} | "
            f"{r.get('fwd_bwd_median', r['fwd_bwd_seconds']):.2f} | {_cpu(r)} | "
            f"{r['rss_model'] / GiB:.2f} | "
            f"{r['peak'] / GiB:.2f} | {r['ratio']:.2f}x | {r['floor_ratio']:.2f}x | "
            f"{r['over_floor']:.2f} |")
    g = rec.get("graph8b")
    if g:
        lines += ["", "## Llama-3-8B config on the meta device", "",
                  f"Graph (capture + walk + probe): {g['graph_seconds']:.1f} s; "
                  f"`sp.prune(random, structured, 50% per layer)` {g['prune_seconds']:.1f} s; "
                  f"process peak {g['peak'] / GiB:.2f} GiB. {g['head_groups']} attention groups "
                  f"of {g['kv_heads_per_group']} key/value heads, {g['mlp_groups']} MLP groups "
                  f"of {g['mlp_features']} features. Dense {g['dense_params']:,} parameters "
                  f"(by hand {g['dense_params_expected']:,}); slim {g['slim_params']:,} "
                  f"(by hand from the narrowed config {g['slim_params_expected']:,}), on meta: "
                  f"{g['slim_on_meta']}."]
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default=",".join(SIZES))
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--sparsity", type=float, default=0.9)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=0,
                    help="more interleaved rounds of fwd+bwd and sp.prune per process (times)")
    ap.add_argument("--no-graph", action="store_true", help="skip the 8B meta graph")
    ap.add_argument("--code", default=ROOT, help="the checkout whose sparsepai is measured")
    ap.add_argument("--tag", default="this")
    ap.add_argument("--merge", action="store_true",
                    help="add to the existing results instead of replacing them")
    ap.add_argument("--out", default=OUT)
    ap.add_argument("--fsdp", type=int, default=0, metavar="RANKS",
                    help="prune across this many FSDP2 gloo ranks (magnitude, SNIP, first-order "
                         "ProsPr) against one process: results in memory_fsdp.{json,md}")
    ap.add_argument("--rank-threads", type=int, default=1, help="threads per rank (--fsdp)")
    ap.add_argument("--steps", type=int, default=2,
                    help="MaskedAdamW steps after pruning (--fsdp; they hold the weights, "
                         "gradients and two moments: about 4 shards per rank)")
    ap.add_argument("--mmap-threshold", type=int, default=2 ** 20, metavar="BYTES",
                    help="glibc's MALLOC_MMAP_THRESHOLD_ for every process of --fsdp (0: glibc's "
                         "dynamic default, which keeps FSDP's freed all-gather buffers "
                         "resident)")
    ap.add_argument("--one", nargs=2, metavar=("SIZE", "METHOD"), help=argparse.SUPPRESS)
    ap.add_argument("--peak-only", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--fsdp-rank", nargs=6, help=argparse.SUPPRESS,
                    metavar=("SIZE", "METHOD", "WORLD", "RANK", "PORT", "CHECKPOINT"))
    ap.add_argument("--graph8b", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(*args.one, args.sparsity, args.threads, args.repeat,
                             timing=not args.peak_only)))
        return
    if args.fsdp_rank:
        size, method, world, rank, port, ckpt = args.fsdp_rank
        print(json.dumps(fsdp_rank(size, method, args.sparsity, args.threads, args.steps,
                                   int(world), int(rank), int(port), ckpt)))
        return
    if args.fsdp:
        fsdp_main(args, os.path.abspath(args.code))
        return
    if args.graph8b:
        print(json.dumps(graph8b(args.threads)))
        return
    from sparsepai import _io

    path = os.path.join(args.out, "memory.json")
    rec = {"runs": []}
    if args.merge and os.path.exists(path):
        with open(path) as f:
            rec = json.load(f)
    rec.update({"cpu": cpu_name(), "threads": args.threads, "sparsity": args.sparsity,
                "commands": rec.get("commands", [rec["command"]] if "command" in rec else [])
                + [command_line()],
                "load_before": " ".join(f"{x:.2f}" for x in os.getloadavg())})
    rec.pop("command", None)
    code = os.path.abspath(args.code)
    with open(LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for size in args.sizes.split(","):
            for method in args.methods.split(","):
                if method == "prospr" and size not in FULL_PROSPR_SIZES:
                    continue
                r = run_child(args, code, "--one", size, method)
                r.update(size=size, method=method, tag=args.tag)
                rec["runs"] = [x for x in rec["runs"] if (x["tag"], x["size"], x["method"])
                               != (args.tag, size, method)] + [r]
                print(json.dumps(r), flush=True)
        if not args.no_graph:
            rec["graph8b"] = run_child(args, code, "--graph8b")
            print(json.dumps(rec["graph8b"]), flush=True)
    os.makedirs(args.out, exist_ok=True)
    _io.atomic_write_json(path, rec)
    _io.atomic_write_bytes(os.path.join(args.out, "memory.md"), _table(rec).encode())


if __name__ == "__main__":
    main()
