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

``--fsdp N``: magnitude, SNIP and first-order ProsPr across N FSDP2 ranks (gloo, CPU mesh), each
method in fresh processes: first one process (the single-process peak, as above), then N rank
processes that build the Llama on the meta device and materialise only their own shards
(:func:`sharded_llama`), prune with ``sp.prune(..., group=)``, save and read back the masks
through DCP and take ``--steps`` ``MaskedAdamW`` steps. Each rank's resident peak is compared
with its shard's share of the single-process peak (target: at most 1.5x); the cap is checked on
the resident peak, not enforced with ``RLIMIT_AS``: torch, gloo and glibc reserve several GiB of
address space that is never touched (``vm_peak`` in the results), so an address-space cap
measures reservations, not memory. Every process runs with glibc's ``MALLOC_MMAP_THRESHOLD_``
fixed (``--mmap-threshold``): with glibc's dynamic default, the buffers FSDP all-gathers and
frees layer by layer stay resident, and the peaks measure the allocator's heap. Results:
benchmarks/results/memory_fsdp.{json,md}.

Holds /tmp/sparsepai-timing.lock while measuring and runs one process at a time (the 0.88B
cases need up to ~11 GiB). Results: benchmarks/results/memory.{json,md} with the command, the
CPU and the load average.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CODE_ENV = "BENCH_MEMORY_CODE"  # the checkout a child process measures
sys.path.insert(0, os.environ.get(CODE_ENV, ROOT))
sys.path.insert(0, HERE)
from machine import cpu_name  # noqa: E402

OUT = os.path.join(HERE, "results")
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
FULL_PROSPR_SIZES = ("0.1b",)
LLAMA3_8B = dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                 num_attention_heads=32, num_key_value_heads=8, vocab_size=128256,
                 max_position_embeddings=8192, tie_word_embeddings=False)


def _status(field: str) -> int:
    """A ``VmRSS``/``VmHWM`` line of /proc/self/status, in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _reset_peak():
    with open("/proc/self/clear_refs", "w") as f:  # 5: reset the peak resident set size
        f.write("5")


def _config(size):
    import transformers as tf

    return tf.LlamaConfig(vocab_size=32000, max_position_embeddings=2048,
                          tie_word_embeddings=True, **SIZES[size])


def _llama(size):
    import torch
    import transformers as tf

    torch.manual_seed(0)
    return tf.LlamaForCausalLM(_config(size))


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
    rss_runtime = _status("VmRSS")
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
    rss_model = _status("VmRSS")
    _reset_peak()
    t0, c0 = time.perf_counter(), time.process_time()
    masks = sp.prune(model, name, sparsity, data, **opts)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    peak = _status("VmHWM")
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
            "peak": _status("VmHWM"), "head_groups": len(heads),
            "kv_heads_per_group": sorted({g.size for g in heads}),
            "mlp_groups": len(mlp), "mlp_features": sorted({g.size for g in mlp}),
            "dense_params": sum(p.numel() for p in model.parameters()),
            "dense_params_expected": dense, "slim_params": got, "slim_params_expected": want,
            "slim_on_meta": all(p.is_meta for p in small.parameters())}


FSDP_METHODS = ("magnitude", "snip", "prospr_first_order")
FSDP_TIMEOUT = 600  # seconds: every collective of a rank, and each rank's whole process


def sharded_llama(cfg, world: int, rank: int):
    """A ``LlamaForCausalLM`` of the config ``cfg`` built on the meta device, sharded with FSDP2
    over a CPU mesh of ``world`` ranks (each decoder layer a unit, then the root) and
    materialised shard by shard (``to_empty``, then the init ``LlamaForCausalLM`` uses, drawn
    per rank): no rank ever allocates the full model. Call on every rank, the group up
    (tests/distributed/test_dist_meta_llama.py checks it against one process)."""
    import torch
    import transformers as tf
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    with torch.device("meta"):
        model = tf.LlamaForCausalLM(cfg)
    mesh = init_device_mesh("cpu", (world,))
    for layer in model.model.layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    model.to_empty(device="cpu")
    g = torch.Generator().manual_seed(1000 + rank)
    with torch.no_grad():
        for p in model.parameters():  # weights N(0, 0.02), norms 1, as LlamaForCausalLM's
            local = p.to_local()
            if p.dim() > 1:
                local.normal_(0.0, cfg.initializer_range, generator=g)
            else:
                local.fill_(1.0)
        rope = model.model.rotary_emb  # its non-persistent buffers, lost on meta
        inv_freq, _ = rope.compute_default_rope_parameters(rope.config)
        rope.inv_freq.copy_(inv_freq)
        rope.original_inv_freq.copy_(inv_freq)
    return model


def fsdp_rank(size: str, method: str, sparsity: float, threads: int, steps: int, world: int,
              rank: int, port: int, ckpt: str) -> dict:
    """One rank of the sharded run, in this (fresh) process: the sharded model, then
    ``sp.prune(..., group=)``, the masks saved and read back through DCP, ``steps`` steps of
    ``MaskedAdamW``; the resident peak of each phase (reset between them)."""
    import gc
    from datetime import timedelta

    import torch
    import torch.distributed as dist
    from transformers import LlamaForCausalLM  # noqa: F401 (runtime, measured: ~0.2 GiB)

    import sparsepai as sp
    from sparsepai.core.loss import cross_entropy
    from sparsepai.core.prunable import prunable_names
    from sparsepai.distributed import load_sharded_masks, save_sharded_masks

    torch.set_num_threads(threads)
    # every collective is bounded: a rank left waiting fails instead of hanging the benchmark
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world, timeout=timedelta(seconds=FSDP_TIMEOUT))
    try:
        group = dist.group.WORLD
        gc.collect()
        rss_runtime = _status("VmRSS")
        _reset_peak()
        model = sharded_llama(_config(size), world, rank)
        gc.collect()
        rss_model, peak_build = _status("VmRSS"), _status("VmHWM")
        params = dict(model.named_parameters())
        names = prunable_names(model)
        n_prunable = sum(params[n].numel() for n in names)
        shard = sum(p.to_local().numel() for p in params.values())
        g = torch.Generator().manual_seed(1 + rank)  # each rank its own batches
        data = [(ids, ids) for ids in (torch.randint(0, 32000, (1, 64), generator=g)
                                       for _ in range(4 + steps))]
        name, opts = METHODS[method]
        _reset_peak()
        t0 = time.perf_counter()
        masks = sp.prune(model, name, sparsity, data[:4], group=group, **opts)
        seconds = time.perf_counter() - t0
        peak_prune = _status("VmHWM")
        kept = torch.tensor([sum(int(m.to_local().sum()) for m in masks.values())])
        dist.all_reduce(kept, group=group)
        assert int(kept) == n_prunable - round(sparsity * n_prunable), int(kept)
        _reset_peak()
        save_sharded_masks(ckpt, masks)
        back = load_sharded_masks(ckpt, model)
        assert all(torch.equal(back[n].to_local(), m.to_local()) for n, m in masks.items())
        del back
        peak_dcp = _status("VmHWM")
        gc.collect()
        _reset_peak()
        sp.apply_masks(model, masks)
        # every parameter, as training would: a gradient left on a norm weight would keep its
        # whole FSDP unit's reduce-scatter output (the other gradients' storage) alive
        opt = sp.optim.MaskedAdamW(list(params.values()), [masks.get(n) for n in params],
                                   lr=1e-3)
        t0 = time.perf_counter()
        for ids, _ in data[4:]:
            opt.zero_grad()
            cross_entropy(model(input_ids=ids).logits, ids).backward()
            opt.step()
        train_seconds = time.perf_counter() - t0
        zero = all(bool((params[n].to_local()[~m.to_local()] == 0).all())
                   for n, m in masks.items())
        assert zero, "a pruned weight moved"
        peak_train = _status("VmHWM")
        dist.barrier(group=group)
        return {"rank": rank, "shard_params": shard, "rss_runtime": rss_runtime,
                "rss_model": rss_model, "peak_build": peak_build, "peak": peak_prune,
                "peak_dcp": peak_dcp, "peak_train": peak_train, "seconds": seconds,
                "train_seconds": train_seconds, "steps": steps, "pruned_stay_zero": zero,
                "vm_peak": _status("VmPeak")}
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run_fsdp(args, code, size, method) -> dict:
    """The sharded run of ``method``: ``args.fsdp`` rank processes, each fresh; their results,
    or the first error."""
    import shutil
    import tempfile

    env = dict(os.environ, OMP_NUM_THREADS=str(args.rank_threads), **{CODE_ENV: code})
    ckpt = tempfile.mkdtemp(prefix="bench-memory-masks-")
    port = _free_port()
    procs = [subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--fsdp-rank", size, method,
         str(args.fsdp), str(rank), str(port), ckpt, "--threads", str(args.rank_threads),
         "--sparsity", str(args.sparsity), "--steps", str(args.steps)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=code)
        for rank in range(args.fsdp)]
    ranks, errors = [], []
    try:
        for p in procs:
            try:
                out, err = p.communicate(timeout=FSDP_TIMEOUT + 60)
            except subprocess.TimeoutExpired:
                p.kill()
                out, err = p.communicate()
                err += "\ntimed out"
            if p.returncode != 0:
                errors.append((err.strip().splitlines() or ["?"])[-1])
            else:
                ranks.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        shutil.rmtree(ckpt, ignore_errors=True)
    return {"error": errors[0]} if errors else {"ranks": ranks}


def fsdp_case(args, code, size, method) -> dict:
    """The single-process peak of ``method`` (a fresh process), then its sharded run; each
    rank's peak against its shard's share of the single-process peak."""
    single = _run_child(args, code, "--one", size, method, "--peak-only")
    if "error" in single:
        return {"error": "single process: " + single["error"]}
    sharded = _run_fsdp(args, code, size, method)
    if "error" in sharded:
        return {"error": "sharded: " + sharded["error"], "single": single}
    world = args.fsdp
    share = single["peak"] / world
    # without the runtime (torch and its libraries, held once by every process)
    share_model = (single["peak"] - single["rss_runtime"]) / world
    for r in sharded["ranks"]:
        r["share"] = share
        r["ratio"] = r["peak"] / share
        r["ratio_without_runtime"] = (r["peak"] - r["rss_runtime"]) / share_model
        r["under_cap"] = r["peak"] <= FSDP_TARGET * share
        r["below_full_model"] = r["peak"] < single["rss_model"]
    return {"world": world, "single": single, "ranks": sharded["ranks"]}


FSDP_TARGET = 1.5  # each rank's peak <= this x its shard's share of the single-process peak


def _run_child(args, code, *child):
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), **{CODE_ENV: code})
    out = subprocess.run([sys.executable, os.path.abspath(__file__), *child,
                          "--threads", str(args.threads), "--sparsity", str(args.sparsity),
                          "--repeat", str(args.repeat)],
                         capture_output=True, text=True, env=env, cwd=code)
    if out.returncode != 0:
        return {"error": (out.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def _med(x) -> str:
    return f" ({x:.2f})" if x is not None else ""


def _cpu(r) -> str:
    if "cpu_seconds" not in r:
        return ""
    c = r["cpu_seconds_median"] if r.get("cpu_seconds_median") is not None else r["cpu_seconds"]
    return f"{c:.1f} / {r['fwd_bwd_cpu_median']:.1f}"


def _header(columns) -> list:
    """A markdown table's header row and rule."""
    return ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]


def _error_row(lead, error, width: int) -> str:
    """A row of ``width`` cells: ``lead``, the error, then empty cells."""
    cells = [str(x) for x in lead] + [f"error: {error}"]
    return "| " + " | ".join(cells + [""] * (width - len(cells))) + " |"


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
             *_header(["code", "size", "params", "method", "time s", "fwd+bwd s",
                       "CPU s prune / fwd+bwd", "model GiB", "peak GiB", "peak / model",
                       "floor / model", "peak / floor"])]
    for r in rec["runs"]:
        if "error" in r:
            lines.append(_error_row([r["tag"], r["size"], "", r["method"]], r["error"], 12))
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


def _fsdp_table(rec) -> str:
    lines = [f"# Pruning memory across FSDP2 ranks ({rec['cpu']})", "",
             *[f"`{c}`" for c in rec["commands"]], "",
             f"Load average before: {rec['load_before']}. Sparsity {rec['sparsity']}; "
             f"{rec['rank_threads']} thread(s) per rank, the single-process run "
             f"{rec['threads']}. `single`: the resident peak of `sp.prune` in one process "
             "(`model`: with the whole model built); `share`: single / ranks; `rank peak`: "
             "the rank's resident peak during `sp.prune(..., group=)`, its model built on the "
             "meta device and materialised shard by shard; `w/o runtime`: the same ratio with "
             "each process's runtime (its resident memory before the model) taken off both; "
             f"target: rank peak <= {FSDP_TARGET}x share. After pruning, each rank saves and "
             "reads back its masks through DCP (`DCP peak`) and takes the given number of "
             "`MaskedAdamW` steps (`train peak`; the pruned weights stay zero). glibc "
             f"`MALLOC_MMAP_THRESHOLD_`: {rec['malloc_mmap_threshold']} (every process).",
             "",
             *_header(["size", "method", "ranks", "rank", "single model GiB", "single peak GiB",
                       "share GiB", "rank runtime GiB", "rank model GiB", "rank peak GiB",
                       "rank peak / share", "w/o runtime", "<= target", "below the whole model",
                       "DCP peak GiB", "steps: train peak GiB", "prune s (rank)"])]
    for c in rec["runs"]:
        if "error" in c:
            lines.append(_error_row([c["size"], c["method"], c.get("world", ""), ""], c["error"],
                                    17))
            continue
        one = c["single"]
        for r in c["ranks"]:
            train = f"{r['steps']}: {r['peak_train'] / GiB:.2f}" if r["steps"] else "0"
            lines.append(
                f"| {c['size']} | {c['method']} | {c['world']} | {r['rank']} | "
                f"{one['rss_model'] / GiB:.2f} | {one['peak'] / GiB:.2f} | "
                f"{r['share'] / GiB:.2f} | {r['rss_runtime'] / GiB:.2f} | "
                f"{r['rss_model'] / GiB:.2f} | {r['peak'] / GiB:.2f} | {r['ratio']:.2f}x | "
                f"{r['ratio_without_runtime']:.2f}x | {'yes' if r['under_cap'] else 'NO'} | "
                f"{'yes' if r['below_full_model'] else 'no'} | {r['peak_dcp'] / GiB:.2f} | "
                f"{train} | {r['seconds']:.1f} |")
    return "\n".join(lines) + "\n"


def _fsdp_main(args, code):
    """``--fsdp N``: for each size and method of FSDP_METHODS, the single-process peak and the
    sharded run on N ranks; results in memory_fsdp.{json,md}."""
    from sparsepai import _io

    path = os.path.join(args.out, "memory_fsdp.json")
    rec = {"runs": [], "commands": []}
    if args.merge and os.path.exists(path):
        with open(path) as f:
            rec = json.load(f)
    command = "python benchmarks/bench_memory.py " + " ".join(sys.argv[1:])
    rec["commands"] = [c for c in rec["commands"] if c != command] + [command]
    rec.update({"cpu": cpu_name(), "threads": args.threads, "rank_threads": args.rank_threads,
                "sparsity": args.sparsity,
                "load_before": " ".join(f"{x:.2f}" for x in os.getloadavg())})
    if args.mmap_threshold:  # for every child: the single process and the ranks alike
        os.environ["MALLOC_MMAP_THRESHOLD_"] = str(args.mmap_threshold)
    rec["malloc_mmap_threshold"] = args.mmap_threshold or "glibc default (dynamic)"
    with open(LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for size in args.sizes.split(","):
            for method in args.methods.split(","):
                if method not in FSDP_METHODS:
                    continue
                r = fsdp_case(args, code, size, method)
                r.update(size=size, method=method, world=args.fsdp)
                rec["runs"] = [x for x in rec["runs"] if (x["size"], x["method"], x["world"])
                               != (size, method, args.fsdp)] + [r]
                print(json.dumps(r), flush=True)
    os.makedirs(args.out, exist_ok=True)
    _io.atomic_write_json(path, rec)
    _io.atomic_write_bytes(os.path.join(args.out, "memory_fsdp.md"), _fsdp_table(rec).encode())


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
        _fsdp_main(args, os.path.abspath(args.code))
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
    command = "python benchmarks/bench_memory.py " + " ".join(sys.argv[1:])
    rec.update({"cpu": cpu_name(), "threads": args.threads, "sparsity": args.sparsity,
                "commands": rec.get("commands", [rec["command"]] if "command" in rec else [])
                + [command],
                "load_before": " ".join(f"{x:.2f}" for x in os.getloadavg())})
    rec.pop("command", None)
    code = os.path.abspath(args.code)
    with open(LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for size in args.sizes.split(","):
            for method in args.methods.split(","):
                if method == "prospr" and size not in FULL_PROSPR_SIZES:
                    continue
                r = _run_child(args, code, "--one", size, method)
                r.update(size=size, method=method, tag=args.tag)
                rec["runs"] = [x for x in rec["runs"] if (x["tag"], x["size"], x["method"])
                               != (args.tag, size, method)] + [r]
                print(json.dumps(r), flush=True)
        if not args.no_graph:
            rec["graph8b"] = _run_child(args, code, "--graph8b")
            print(json.dumps(rec["graph8b"]), flush=True)
    os.makedirs(args.out, exist_ok=True)
    _io.atomic_write_json(path, rec)
    _io.atomic_write_bytes(os.path.join(args.out, "memory.md"), _table(rec).encode())


if __name__ == "__main__":
    main()
