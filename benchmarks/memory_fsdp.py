"""The FSDP2 part of the memory benchmark (``bench_memory.py --fsdp N``): magnitude, SNIP and
first-order ProsPr across N FSDP2 ranks (gloo, CPU mesh), each method in fresh processes: first
one process (the single-process peak, as ``bench_memory.py`` measures it), then N rank
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

Every process, the ranks included, is ``bench_memory.py`` run again with hidden arguments
(``--one``, ``--fsdp-rank``): the command line is that script's alone.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)  # its siblings, also when imported as benchmarks.memory_fsdp
from machine import cpu_name  # noqa: E402
from memory_common import (  # noqa: E402
    CODE_ENV, GiB, LOCK, METHODS, SCRIPT, command_line, error_row, llama_config, proc_status,
    reset_peak, run_child, table_header)

FSDP_METHODS = ("magnitude", "snip", "prospr_first_order")
FSDP_TIMEOUT = 600  # seconds: every collective of a rank, and each rank's whole process
FSDP_TARGET = 1.5  # each rank's peak <= this x its shard's share of the single-process peak


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
        rss_runtime = proc_status("VmRSS")
        reset_peak()
        model = sharded_llama(llama_config(size), world, rank)
        gc.collect()
        rss_model, peak_build = proc_status("VmRSS"), proc_status("VmHWM")
        params = dict(model.named_parameters())
        names = prunable_names(model)
        n_prunable = sum(params[n].numel() for n in names)
        shard = sum(p.to_local().numel() for p in params.values())
        g = torch.Generator().manual_seed(1 + rank)  # each rank its own batches
        data = [(ids, ids) for ids in (torch.randint(0, 32000, (1, 64), generator=g)
                                       for _ in range(4 + steps))]
        name, opts = METHODS[method]
        reset_peak()
        t0 = time.perf_counter()
        masks = sp.prune(model, name, sparsity, data[:4], group=group, **opts)
        seconds = time.perf_counter() - t0
        peak_prune = proc_status("VmHWM")
        kept = torch.tensor([sum(int(m.to_local().sum()) for m in masks.values())])
        dist.all_reduce(kept, group=group)
        assert int(kept) == n_prunable - round(sparsity * n_prunable), int(kept)
        reset_peak()
        save_sharded_masks(ckpt, masks)
        back = load_sharded_masks(ckpt, model)
        assert all(torch.equal(back[n].to_local(), m.to_local()) for n, m in masks.items())
        del back
        peak_dcp = proc_status("VmHWM")
        gc.collect()
        reset_peak()
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
        peak_train = proc_status("VmHWM")
        dist.barrier(group=group)
        return {"rank": rank, "shard_params": shard, "rss_runtime": rss_runtime,
                "rss_model": rss_model, "peak_build": peak_build, "peak": peak_prune,
                "peak_dcp": peak_dcp, "peak_train": peak_train, "seconds": seconds,
                "train_seconds": train_seconds, "steps": steps, "pruned_stay_zero": zero,
                "vm_peak": proc_status("VmPeak")}
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
        [sys.executable, SCRIPT, "--fsdp-rank", size, method, str(args.fsdp), str(rank),
         str(port), ckpt, "--threads", str(args.rank_threads),
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
    single = run_child(args, code, "--one", size, method, "--peak-only")
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
             *table_header(["size", "method", "ranks", "rank", "single model GiB",
                            "single peak GiB", "share GiB", "rank runtime GiB", "rank model GiB",
                            "rank peak GiB", "rank peak / share", "w/o runtime", "<= target",
                            "below the whole model", "DCP peak GiB", "steps: train peak GiB",
                            "prune s (rank)"])]
    for c in rec["runs"]:
        if "error" in c:
            lines.append(error_row([c["size"], c["method"], c.get("world", ""), ""], c["error"],
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


def fsdp_main(args, code):
    """``--fsdp N``: for each size and method of FSDP_METHODS, the single-process peak and the
    sharded run on N ranks; results in memory_fsdp.{json,md}."""
    from sparsepai import _io

    path = os.path.join(args.out, "memory_fsdp.json")
    rec = {"runs": [], "commands": []}
    if args.merge and os.path.exists(path):
        with open(path) as f:
            rec = json.load(f)
    command = command_line()
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
