"""Prune the models users bring: coverage of sparsepai and of Torch-Pruning on the model zoos.

For every model of ``zoo_models.catalogue()`` (torchvision classifiers up to 150M parameters, a
list of timm architectures over its families, Hugging Face Llama/GPT-2/BERT/ViT from small
configs; random weights, nothing downloaded), each in a fresh subprocess with a time limit:

structured (``sp.prune(model, "magnitude", 0.5, structured=True, unit="channels",
scope="layer", example_inputs=x)``: half of every prunable layer's channels, the ratio
Torch-Pruning is given below, then ``sp.slim``):
  - ok or the error (its first line);
  - ``graph_s``: the time to capture the model and build its channel graph;
  - ``slim_rel_err``: max |slim(x) - masked_dense(x)| / max |masked_dense(x)|, eval mode,
    float32 (``slim_ok`` when at most 1e-4);
  - ``removed``: the fraction of the model's parameters the slim model no longer has;
  - ``removed_norm``: the same with ``norm_streams=True`` (opt-in: channels under layer and
    group norms pruned too, the norms narrowed; slim then normalises the kept channels only,
    so it approximates the masked model, ``norm_rel_err`` says how closely).
unstructured: for each method, whether ``sp.prune(model, method, 0.9, data)`` runs and keeps
  exactly ``N - round(0.9 N)`` weights (batch of 2; short schedules: synflow 2 rounds, force 2
  iterations, prospr 1 meta step, so that the whole zoo fits in an hour here; the code paths
  are the ones the defaults take);
Torch-Pruning (``torch_pruning.pruner.MetaPruner``, L1 magnitude importance, per-layer ratio
  0.5, the layers that write the model's outputs ignored, its defaults otherwise): ok or the
  error, whether the pruned model still runs, and the fraction of parameters removed.

    python benchmarks/bench_zoo.py                      # everything, resumable (~1-2 h here)
    python benchmarks/bench_zoo.py --families hf        # one family
    python benchmarks/bench_zoo.py --only timm:resnet18d,hf:llama --rerun
    python benchmarks/bench_zoo.py --report             # table only, from results.jsonl

Results: benchmarks/results/zoo/{results.jsonl,zoo.csv,zoo.md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))
OUT = os.path.join(HERE, "results", "zoo")
METHODS = ("random", "magnitude", "snip", "grasp", "synflow", "force", "prospr")
SHORT = {"synflow": {"rounds": 2}, "force": {"iterations": 2}, "prospr": {"meta_steps": 1}}


def _call(model, x):
    return model(**x) if isinstance(x, dict) else model(x)


def _logits(out):
    if hasattr(out, "logits"):
        return out.logits
    if isinstance(out, (tuple, list)):
        return out[0]
    return out


def _nparams(model):
    return sum(p.numel() for p in model.parameters())


def _err(exc):
    return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ''}"


def structured(model, x):
    import copy

    import torch

    import sparsepai as sp
    from sparsepai.structured.analysis import analyse

    rec = {}
    t0 = time.perf_counter()
    analyse(model, example_inputs=x)
    rec["graph_s"] = round(time.perf_counter() - t0, 3)
    masks = sp.prune(model, "magnitude", 0.5, structured=True, unit="channels", scope="layer",
                     example_inputs=x)
    slim = sp.slim(model, masks)
    dense = sp.apply_masks(copy.deepcopy(model), masks)
    with torch.no_grad():
        want = _logits(_call(dense.eval(), x)).float()
        got = _logits(_call(slim.eval(), x)).float()
    rec["slim_rel_err"] = float((got - want).abs().max() / (want.abs().max() + 1e-12))
    rec["slim_ok"] = rec["slim_rel_err"] <= 1e-4
    rec["removed"] = round(1 - _nparams(slim) / _nparams(model), 4)
    rec["pruned_layers"] = sum(1 for m in masks.values() if not bool(m.all()))
    return rec


def _norm_streams(model, x):
    """The same pruning with ``norm_streams=True``: channels under layer/group norms pruned
    too (slim then approximates the masked model: its error is recorded, not checked)."""
    import copy

    import torch

    import sparsepai as sp

    masks = sp.prune(model, "magnitude", 0.5, structured=True, unit="channels", scope="layer",
                     example_inputs=x, norm_streams=True)
    slim = sp.slim(model, masks)
    dense = sp.apply_masks(copy.deepcopy(model), masks)
    with torch.no_grad():
        want = _logits(_call(dense.eval(), x)).float()
        got = _logits(_call(slim.eval(), x)).float()
    return {"norm_streams": "ok", "removed_norm": round(1 - _nparams(slim) / _nparams(model), 4),
            "norm_rel_err": float((got - want).abs().max() / (want.abs().max() + 1e-12))}


def unstructured(model, x, y, loss_fn):
    import sparsepai as sp

    out = {}
    data = [(x, y)] * 3
    for m in METHODS:
        try:
            masks = sp.prune(model, m, 0.9, data, loss_fn=loss_fn, **SHORT.get(m, {}))
            params = dict(model.named_parameters())
            n = sum(params[k].numel() for k in masks)
            kept = sum(int(v.sum()) for v in masks.values())
            out[m] = "ok" if kept == n - round(0.9 * n) else f"count {kept} != {n - round(0.9 * n)}"
        except Exception as exc:  # a benchmark records every failure, it does not stop on one
            out[m] = _err(exc)
    return out


def _output_layers(model, x):
    """Modules whose outputs are the logits' classes (the classifier): Torch-Pruning must not
    prune them, as sparsepai never prunes the model's outputs."""
    import torch

    shapes, hooks = {}, []
    for name, mod in model.named_modules():
        if isinstance(mod, (torch.nn.Linear, torch.nn.Conv2d)) or type(mod).__name__ == "Conv1D":
            hooks.append(mod.register_forward_hook(
                lambda m, i, o, name=name: shapes.__setitem__(name, tuple(o.shape))))
    with torch.no_grad():
        out = _logits(_call(model.eval(), x))
    for h in hooks:
        h.remove()
    mods = dict(model.named_modules())
    # a linear classifier ends in the classes; a convolution classifier (DLA, SqueezeNet) has
    # them as its channels, pooled or flattened afterwards
    return [mods[n] for n, s in shapes.items()
            if s[-1] == out.shape[-1] or (len(s) > 2 and isinstance(mods[n], torch.nn.Conv2d)
                                          and s[1] == out.shape[-1])]


def _tp_options(model, x):
    """Torch-Pruning's own recipe for each model kind, as its examples give it: a forward
    function for keyword inputs, the logits out of a ``ModelOutput``, and for attention the
    head counts of the q/k/v projections with whole heads pruned (``prune_num_heads``) at the
    same ratio, head dimensions kept."""
    heads = {}
    for mod in model.modules():
        cfg = getattr(mod, "config", None)
        if all(hasattr(mod, a) for a in ("q_proj", "k_proj", "v_proj")) and cfg is not None:
            kv = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
            heads.update({mod.q_proj: cfg.num_attention_heads, mod.k_proj: kv, mod.v_proj: kv})
        elif all(hasattr(mod, a) for a in ("query", "key", "value")) and \
                hasattr(mod, "num_attention_heads"):
            heads.update({getattr(mod, a): mod.num_attention_heads
                          for a in ("query", "key", "value")})
        elif hasattr(mod, "qkv") and hasattr(mod, "num_heads"):  # timm's fused attention
            heads[mod.qkv] = mod.num_heads
    opts = {}
    if heads:
        opts.update(num_heads=heads, prune_num_heads=True, prune_head_dims=False,
                    head_pruning_ratio=0.5)
    if isinstance(x, dict):
        opts["forward_fn"] = lambda m, inp: m(**inp)
    opts["output_transform"] = _logits
    return opts


def _tp_update_heads(model, pruner):
    """The attribute updates Torch-Pruning's examples make by hand after pruning heads (the
    modules' forwards read their head counts)."""
    heads = getattr(pruner, "num_heads", {})
    for mod in model.modules():
        if hasattr(mod, "q_proj") and mod.q_proj in heads:
            h, kv = heads[mod.q_proj], heads[mod.k_proj]
            for attr, v in (("num_heads", h), ("num_key_value_heads", kv),
                            ("num_key_value_groups", h // max(kv, 1))):
                if hasattr(mod, attr) or attr == "num_key_value_groups":
                    setattr(mod, attr, v)
            if hasattr(mod, "config"):
                mod.config.num_attention_heads, mod.config.num_key_value_heads = h, kv
        elif hasattr(mod, "query") and mod.query in heads:
            mod.num_attention_heads = heads[mod.query]
            mod.all_head_size = mod.query.out_features
        elif hasattr(mod, "qkv") and mod.qkv in heads:
            mod.num_heads = heads[mod.qkv]


def torch_pruning(model, x):
    import copy

    import torch
    import torch_pruning as tp

    work = copy.deepcopy(model).eval()
    before = _nparams(work)
    pruner = tp.pruner.MetaPruner(work, example_inputs=x,
                                  importance=tp.importance.MagnitudeImportance(p=1),
                                  pruning_ratio=0.5, ignored_layers=_output_layers(work, x),
                                  **_tp_options(work, x))
    pruner.step()
    _tp_update_heads(work, pruner)
    rec = {"tp_removed": round(1 - _nparams(work) / before, 4)}
    try:
        with torch.no_grad():
            _logits(_call(work, x))
        rec["tp_runs"] = True
    except Exception as exc:
        rec["tp_runs"] = False
        rec["tp_run_error"] = _err(exc)
    return rec


def run_one(key, parts):
    import torch

    from zoo_models import catalogue

    torch.set_num_threads(int(os.environ.get("ZOO_THREADS", "2")))
    family, name = key.split(":", 1)
    spec = catalogue((family,))[key]
    model, x, y, loss_fn = spec.build()
    rec = {"key": key, "family": family, "name": name, "params_m": round(_nparams(model) / 1e6, 2)}
    for part, fn in (("structured", structured), ("tp", torch_pruning)):
        if part in parts:
            try:  # a benchmark records every failure, it does not stop on one
                rec.update(fn(model, x))
                rec[part] = "ok"
            except Exception as exc:
                rec[part] = _err(exc)
    if "structured" in parts:  # the opt-in approximation, recorded apart from the exact figure
        try:
            rec.update(_norm_streams(model, x))
        except Exception as exc:
            rec["norm_streams"] = _err(exc)
    if "unstructured" in parts:
        rec["unstructured"] = unstructured(model, x, y, loss_fn)
    return rec


def _child(key, parts, timeout):
    """``run_one(key, parts)`` in a fresh process; a crash or a timeout becomes the record."""
    first = parts[0]  # the part a timeout or a crash is recorded against
    try:
        p = subprocess.run([sys.executable, __file__, "--one", key, "--parts", ",".join(parts)],
                           capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {first: f"timeout after {timeout:.0f} s"}
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("ZOO-RESULT ")]
    if lines:
        return json.loads(lines[-1][11:])
    tail = (p.stderr.strip().splitlines() or ["?"])[-1][:300]
    return {first: f"crashed (exit {p.returncode}): {tail}"}


def _done(path):
    if not os.path.exists(path):
        return {}
    out = {}
    with open(path) as f:
        for line in f:
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a kill: that model runs again
            out[r["key"]] = r
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--families", default="tv,timm,hf")
    ap.add_argument("--only", default="", help="comma-separated keys family:name")
    ap.add_argument("--parts", default="structured,unstructured,tp")
    ap.add_argument("--unstructured-families", default="hf",
                    help="families whose models also run every unstructured method (each method "
                         "is a forward/backward or more at full resolution: the hour it would "
                         "take on every CNN here is spent elsewhere)")
    ap.add_argument("--timeout", type=float, default=600, help="seconds per model and tool")
    ap.add_argument("--rerun", action="store_true", help="run models already in results")
    ap.add_argument("--report", action="store_true", help="only write the table")
    ap.add_argument("--out", default=OUT)
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    parts = tuple(args.parts.split(","))
    if args.one:
        print("ZOO-RESULT " + json.dumps(run_one(args.one, parts)), flush=True)
        return
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "results.jsonl")
    if not args.report:
        from zoo_models import catalogue

        keys = args.only.split(",") if args.only else list(catalogue(tuple(
            args.families.split(","))))
        done = _done(path)
        for i, key in enumerate(keys):
            mine = tuple(p for p in parts if p != "tp" and (
                p != "unstructured" or key.split(":")[0] in args.unstructured_families.split(",")))
            if key in done and not args.rerun and all(p in done[key] for p in mine):
                continue
            t0 = time.time()
            rec = {"key": key}
            # the unstructured columns are measured apart (they cost more than the rest on a
            # CNN): a run of either kind keeps the other kind's figures as they were
            if parts == ("unstructured",) and key in done:
                rec = {k: v for k, v in done[key].items() if k not in ("unstructured", "wall_s")}
            elif key in done and "unstructured" not in mine and "unstructured" in done[key]:
                rec["unstructured"] = done[key]["unstructured"]
            # Torch-Pruning in a process of its own: where it hangs (it does on the tiny Llama)
            # its time limit must not cost sparsepai's record, and the other way round
            for group in (mine, ("tp",) if "tp" in parts else ()):
                if group:
                    rec.update(_child(key, group, args.timeout))
            rec["wall_s"] = round(time.time() - t0, 1)
            with open(path, "a") as f:
                f.write(json.dumps(rec) + "\n")
            print(f"[{i + 1}/{len(keys)}] {key}: structured={rec.get('structured')} "
                  f"removed={rec.get('removed')} tp={rec.get('tp')} "
                  f"tp_removed={rec.get('tp_removed')} ({rec['wall_s']} s)", flush=True)
    from zoo_report import write_report

    write_report(_done(path), args.out, machine=f"{platform.processor() or platform.machine()}, "
                 f"{os.cpu_count()} cores")


if __name__ == "__main__":
    main()
