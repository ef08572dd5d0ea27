"""Unstructured-sparse training on the CPU: per-layer forward + backward and whole training steps.

Per layer (forward plus backward: input and weight gradients), same run, contenders interleaved
round by round (order rotated), medians:

- ``dense``: ``torch.nn.functional.conv2d``/``linear`` (oneDNN) with the dense weight;
- ``masked``: the masked dense layer (the weight multiplied by its mask in the graph);
- ``ours``: ``sparsepai.ops.sparse_conv2d``/``sparse_linear``;
- ``sparseprop``: SparseProp's layers (``sparseprop==0.1.14``), when it is installed.

Shapes (``--shapes``): ResNet-18's and VGG-16's CIFAR convolutions (batch ``--batch``) and a
transformer MLP (768 -> 3072 -> 768 at 512 and 2048 tokens), at uniform random masks of the
densities in ``--densities`` and, for each convolution set, at the per-layer masks that ProsPr,
SNIP and magnitude pruning (``--pai``, the library's defaults) give that model at
``--pai-sparsity`` (95%): the first layer of each shape. Each row also gives the layer's
floor: the FLOPs at the kept density (forward, input and weight gradient:
3 x 2 x nnz x N x OH x OW) at the machine's measured dense GEMM rate, or the activations every
implementation must read and write (x and y forward; dy, x and dx backward) at its measured
copy bandwidth, whichever is longer.

End to end (``--e2e``): one training step (zero_grad, forward, cross-entropy, backward,
``MaskedSGD`` step with momentum 0.9, weight decay 5e-4) of ResNet-18 and VGG-16 (CIFAR shapes,
batch ``--batch``) with masks from each ``--e2e-method`` at each ``--e2e-sparsities``: dense,
masked dense, and ``sp.sparsify`` (measured on the batch). Each step row also times every
convolution and linear layer of the step alone and gives the step's caps: the rest of the step
(dense step less its layers) plus the layers at their floor, either the ones ``sp.sparsify``
swapped (the others dense) or all of them.

Writes ``--out`` .json, .md (the tables, machine, load and command), .png (per-layer speed-up
at random masks) and _e2e.png (training-step speed-up against sparsity, with its caps).

    python benchmarks/bench_sparse_train.py                 # -> benchmarks/results/sparse_train/results.*
    python benchmarks/bench_sparse_train.py --quick         # fewer shapes and rounds
    python benchmarks/bench_sparse_train.py --shapes vgg16 --e2e --e2e-models vgg16

Holds /tmp/sparsepai-timing.lock while timing. The pruning data are random CIFAR-shaped
batches (no dataset here): the masks' per-layer densities, not their accuracy, matter for time.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import shlex
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

from machine import cpu_name  # noqa: E402
from step_floor import floor_seconds, layer_io, masked_flops, step_caps, step_layers  # noqa: E402

LOCK = "/tmp/sparsepai-timing.lock"
OUT = os.path.join(HERE, "results", "sparse_train", "results")

# (name, C, O, H, k, stride, padding) at CIFAR resolution
RESNET18 = [("r18.l1", 64, 64, 32, 3, 1, 1), ("r18.l2.down", 64, 128, 32, 3, 2, 1),
            ("r18.l2", 128, 128, 16, 3, 1, 1), ("r18.l2.sc", 64, 128, 32, 1, 2, 0),
            ("r18.l3.down", 128, 256, 16, 3, 2, 1), ("r18.l3", 256, 256, 8, 3, 1, 1),
            ("r18.l4.down", 256, 512, 8, 3, 2, 1), ("r18.l4", 512, 512, 4, 3, 1, 1)]
VGG16 = [("vgg.64", 64, 64, 32, 3, 1, 1), ("vgg.128a", 64, 128, 16, 3, 1, 1),
         ("vgg.128", 128, 128, 16, 3, 1, 1), ("vgg.256a", 128, 256, 8, 3, 1, 1),
         ("vgg.256", 256, 256, 8, 3, 1, 1), ("vgg.512a", 256, 512, 4, 3, 1, 1),
         ("vgg.512", 512, 512, 4, 3, 1, 1), ("vgg.512s", 512, 512, 2, 3, 1, 1)]
MLP = [("mlp.up", 768, 3072), ("mlp.down", 3072, 768)]
# the training-step speed-ups over dense the kernels are asked for (ResNet-18, CIFAR, batch 64,
# masks pruned at initialization), marked on the step plot
STEP_TARGETS = {0.9: 1.5, 0.95: 2.0, 0.98: 3.0}


@contextlib.contextmanager
def timing_lock():
    with open(LOCK, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def run_header(script, out, threads, load_before, load_after):
    """What every sparse-training results file records first: the machine, the threads, torch,
    the command as typed (``--out`` relative to the repository: no machine paths) and the load
    average before and after the timing."""
    import torch

    return {"machine": cpu_name(l3=True), "threads": threads, "torch": torch.__version__,
            "command": f"python benchmarks/{script} " + " ".join(
                shlex.quote(os.path.relpath(a, os.path.dirname(HERE)) if a == out else a)
                for a in sys.argv[1:]),
            "load_before": [round(v, 1) for v in load_before],
            "load_after": [round(v, 1) for v in load_after]}


def machine_rates():
    """(dense GEMM FLOP/s, copy bytes/s) measured now: the floor's two rates."""
    import torch

    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    big = torch.empty(64 << 20 >> 2)
    dst = torch.empty_like(big)
    ts, tc = [], []
    for _ in range(5):
        t0 = time.perf_counter()
        a @ b
        ts.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        dst.copy_(big)
        tc.append(time.perf_counter() - t0)
    return 2 * 2048 ** 3 / min(ts), 2 * big.numel() * 4 / min(tc)


def sparseprop_layers(kind, weight, mask, stride, padding):
    """SparseProp's layers for the masked weight, {variant: module}: convolutions vectorised over
    the batch and (stride 1) over the output width, as its own per-shape choice tries; empty when
    it is not installed or does not take the shape (square kernels, strides 1 and 2)."""
    try:
        import sparseprop.modules as spm
    except Exception:
        return {}
    out = {}
    w = (weight * mask).contiguous()
    try:
        if kind == "conv":
            if weight.shape[2] != weight.shape[3] or stride not in (1, 2):
                return {}
            out["sparseprop"] = spm.SparseConv2d(w.clone(), padding=padding, stride=stride,
                                                 vectorizing_over_on=False)
            if stride == 1:
                out["sparseprop_on"] = spm.SparseConv2d(w.clone(), padding=padding, stride=stride,
                                                        vectorizing_over_on=True)
        else:
            out["sparseprop"] = spm.SparseLinear(w.clone())
    except Exception as exc:  # a shape it refuses: no column
        print(f"sparseprop: {type(exc).__name__}: {exc}", flush=True)
        return {}
    return out


def layer_case(kind, shape, density, batch, tokens=None, mask=None, seed=0):
    """The inputs and contenders of one per-layer row."""
    import torch
    import torch.nn.functional as F

    from sparsepai.ops.sparse_conv import sparse_conv2d, sparse_layout
    from sparsepai.ops.sparse_linear import sparse_linear

    g = torch.Generator().manual_seed(seed)
    if kind == "conv":
        _, c, o, h, k, s, p = shape
        x = torch.randn(batch, c, h, h, generator=g)
        w = torch.randn(o, c, k, k, generator=g) * 0.05
    else:
        _, c, o = shape
        x = torch.randn(tokens, c, generator=g)
        w = torch.randn(o, c, generator=g) * 0.05
        s = p = None
    if mask is None:
        mask = torch.rand(w.shape, generator=g) < density
    lay = sparse_layout(mask)
    vals = w.reshape(-1)[lay.index].clone().requires_grad_(True)
    wd = (w * mask).requires_grad_(True)
    wm = w.clone().requires_grad_(True)
    fm = mask.to(w.dtype)
    if kind == "conv":
        ws = tuple(w.shape)
        runs = {"dense": (lambda x: F.conv2d(x, wd, None, s, p), [wd]),
                "masked": (lambda x: F.conv2d(x, wm * fm, None, s, p), [wm]),
                "ours": (lambda x: sparse_conv2d(x, vals, lay, None, ws, s, p), [vals])}
    else:
        runs = {"dense": (lambda x: F.linear(x, wd), [wd]),
                "masked": (lambda x: F.linear(x, wm * fm), [wm]),
                "ours": (lambda x: sparse_linear(x, vals, lay, None, c), [vals])}
    for name, layer in sparseprop_layers(kind, w, mask, s, p).items():
        runs[name] = (layer, list(layer.parameters()))
    out_elems = runs["dense"][0](x).numel()
    nnz = int(mask.sum())
    per_out = out_elems // o
    flops = 3 * 2 * nnz * per_out
    traffic = 4 * (3 * x.numel() + 2 * out_elems)
    return x, runs, dict(nnz=nnz, density=nnz / mask.numel(), flops=flops, bytes=traffic)


def time_runs(x, runs, rounds):
    """Median seconds of forward + backward per contender, interleaved round by round."""
    import torch

    xs = x.clone().requires_grad_(True)
    grads = {}
    times = {k: [] for k in runs}
    names = list(runs)
    for r in range(rounds + 1):  # round 0 warms up
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            fn, params = runs[name]
            for prm in params + [xs]:
                prm.grad = None
            t0 = time.perf_counter()
            y = fn(xs)
            if name not in grads:
                grads[name] = torch.randn_like(y)
            y.backward(grads[name])
            if r:
                times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


MODELS = {"resnet18": RESNET18, "vgg16": VGG16}  # the zoo model of each conv shape set


def conv_input_sizes(model, x):
    """``{conv name: input height}`` of every ``Conv2d`` of ``model`` on one forward of ``x``."""
    return {n: ins[-2] for n, (ins, _, _) in layer_io(model, x).items() if len(ins) == 4}


def row_masks(model, masks, rows, sizes):
    """The mask of the first ``Conv2d`` of ``model`` that has each row's shape (in and out
    channels, kernel, stride and input size ``sizes[name]``): ``{row name: bool mask}``; rows
    no masked convolution of the model has are left out."""
    import torch

    out = {}
    convs = [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)]
    for row in rows:
        _, c, o, h, k, s, p = row
        for n, m in convs:
            if ((m.in_channels, m.out_channels, m.kernel_size[0], m.stride[0], m.padding[0],
                 sizes.get(n)) == (c, o, k, s, p, h) and n + ".weight" in masks):
                out[row[0]] = masks[n + ".weight"]
                break
    return out


def pai_masks(model_name, method, sparsity, batch):
    """Per-layer masks ``method`` (ProsPr, SNIP, magnitude, with the library's defaults) gives
    ``model_name`` (CIFAR shapes) at ``sparsity`` on random CIFAR-shaped batches, keyed like the
    rows of its shape set (the first layer of each shape): non-uniform per-layer densities."""
    import torch

    import sparsepai as sp
    from sparsepai.experiments.models import get_model

    torch.manual_seed(0)
    model = get_model(model_name, num_classes=10, in_channels=3, image_size=32)
    g = torch.Generator().manual_seed(1)
    data = [(torch.randn(batch, 3, 32, 32, generator=g), torch.randint(0, 10, (batch,),
                                                                       generator=g))
            for _ in range(4)]  # ProsPr takes 4 batches
    masks = sp.prune(model, method, sparsity, data)
    sizes = conv_input_sizes(model, data[0][0][:1])
    return row_masks(model, masks, MODELS[model_name], sizes)


def per_layer(args, rates):
    rows = []
    sets = [s for s in args.shapes if s in MODELS]
    shapes = [("conv", r) for s in sets for r in MODELS[s]]
    shapes += [("linear", m) for m in MLP] if "mlp" in args.shapes else []
    for kind, shape in shapes:
        for density in args.densities:
            toks = args.tokens if kind == "linear" else [None]
            for t in toks:
                x, runs, info = layer_case(kind, shape, density, args.batch, t)
                rows.append(row_of(shape[0], kind, "random", x, runs, info, args, rates, t))
    for model_name in sets:
        for method in args.pai:
            masks = pai_masks(model_name, method, args.pai_sparsity, args.batch)
            for shape in MODELS[model_name]:
                if shape[0] not in masks:
                    continue
                x, runs, info = layer_case("conv", shape, None, args.batch, mask=masks[shape[0]])
                rows.append(row_of(shape[0], "conv", f"{method}@{100 * args.pai_sparsity:g}",
                                   x, runs, info, args, rates, None))
    return rows


def row_of(name, kind, masks, x, runs, info, args, rates, tokens):
    t = time_runs(x, runs, args.rounds)
    if "sparseprop_on" in t:  # its best variant for the shape, as its own auto choice
        t["sparseprop"] = min(t["sparseprop"], t.pop("sparseprop_on"))
    floor = floor_seconds(info["flops"], info["bytes"], rates)
    row = {"layer": name, "kind": kind, "masks": masks, "density": round(info["density"], 4),
           "tokens": tokens, **{f"{k}_ms": v * 1e3 for k, v in t.items()},
           "floor_ms": floor * 1e3, "speedup_vs_dense": t["dense"] / t["ours"],
           "ours_over_floor": t["ours"] / floor}
    if "sparseprop" in t:
        row["speedup_vs_sparseprop"] = t["sparseprop"] / t["ours"]
    print(f"{name:<12} {masks:<12} d={info['density']:.3f} "
          + " ".join(f"{k} {v * 1e3:7.2f}" for k, v in t.items())
          + f" | {row['speedup_vs_dense']:.2f}x dense, {row['ours_over_floor']:.1f}x floor",
          flush=True)
    return row


def e2e(args, rates):
    import copy

    import torch

    import sparsepai as sp
    from sparsepai.experiments.models import get_model
    from sparsepai.optim.masked import MaskedSGD

    rows = []
    g = torch.Generator().manual_seed(3)
    x = torch.randn(args.batch, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (args.batch,), generator=g)
    for name, method, sparsity in [(n, m, s) for n in args.e2e_models for m in args.e2e_method
                                   for s in args.e2e_sparsities]:
        torch.manual_seed(0)
        base = get_model(name, num_classes=10, in_channels=3, image_size=32)
        data = [(torch.randn(args.batch, 3, 32, 32, generator=g),
                 torch.randint(0, 10, (args.batch,), generator=g)) for _ in range(4)]
        masks = sp.prune(base, method, sparsity, data)
        flops = masked_flops(base, masks, x)
        flop_fraction = flops[1] / flops[0]

        dense = copy.deepcopy(base)
        masked = sp.apply_masks(copy.deepcopy(base), masks)
        sparse = sp.apply_masks(copy.deepcopy(base), masks)
        # the library's default min_sparsity unless the command sets one
        sp.sparsify(sparse, masks, example_inputs=x,
                    **({} if args.min_sparsity is None else {"min_sparsity": args.min_sparsity}))
        swapped = sum(e.swapped for e in sparse.sparsepai_sparsify_report)
        names = dict(sparse.named_parameters())
        models = {"dense": (dense, MaskedSGD(dense.named_parameters(), {}, lr=0.01,
                                              momentum=0.9, weight_decay=5e-4)),
                  "masked": (masked, MaskedSGD(masked.named_parameters(), masks, lr=0.01,
                                                momentum=0.9, weight_decay=5e-4)),
                  "sparse": (sparse, MaskedSGD(sparse.named_parameters(),
                                                {k: m for k, m in masks.items()
                                                 if k in names},
                                                lr=0.01, momentum=0.9, weight_decay=5e-4))}
        times = {k: [] for k in models}
        order = list(models)
        for r in range(args.e2e_steps + 1):
            for k in order[r % 3:] + order[:r % 3]:
                model, opt = models[k]
                model.train()
                t0 = time.perf_counter()
                opt.zero_grad(set_to_none=True)
                torch.nn.functional.cross_entropy(model(x), y).backward()
                opt.step()
                if r:
                    times[k].append(time.perf_counter() - t0)
        med = {k: statistics.median(v) for k, v in times.items()}
        layers = step_layers(dense, masks, x, rates)
        caps = step_caps(1e3 * med["dense"], layers,
                         {e.name for e in sparse.sparsepai_sparsify_report if e.swapped})
        row = {"model": name, "method": method, "sparsity": sparsity,
               "min_sparsity": args.min_sparsity, "swapped_layers": swapped,
               "layers": len(sparse.sparsepai_sparsify_report),
               **{f"{k}_ms": v * 1e3 for k, v in med.items()},
               "speedup_vs_dense": med["dense"] / med["sparse"],
               "speedup_vs_masked": med["masked"] / med["sparse"],
               "kept_flop_fraction": flop_fraction, **caps,
               "step_layers": {k: {"dense_ms": d, "floor_ms": f} for k, (d, f) in layers.items()}}
        print(f"{name} {method}@{sparsity}: " + " ".join(
            f"{k} {v * 1e3:.0f} ms" for k, v in med.items())
            + f" -> {row['speedup_vs_dense']:.2f}x dense ({swapped}/{row['layers']} layers "
              f"sparse; conv/linear FLOPs kept {flop_fraction:.3f}; rest of the step "
              f"{caps['rest_ms']:.0f} ms; caps {caps['cap_swapped']:.2f}x with the swapped "
              f"layers at their floor, {caps['cap_all']:.2f}x with every layer at its floor)",
            flush=True)
        rows.append(row)
    return rows


def write(results, path):
    from sparsepai import _io

    _io.atomic_write_json(path + ".json", results)
    lines = [f"# Sparse training on the CPU\n", f"Machine: {results['machine']}; torch threads "
             f"{results['threads']}; load before {results['load_before']}, after "
             f"{results['load_after']}.\n", f"Command: `{results['command']}`\n"]
    if results["layers"]:
        has_sp = any("sparseprop_ms" in r for r in results["layers"])
        lines.append("| layer | masks | density | dense ms | masked ms | ours ms | "
                     + ("SparseProp ms | " if has_sp else "")
                     + "floor ms | ours vs dense | ours / floor |")
        lines.append("|" + "---|" * (9 + has_sp))
        for r in results["layers"]:
            name = r["layer"] + (f" ({r['tokens']} tok)" if r["tokens"] else "")
            lines.append(f"| {name} | {r['masks']} | {r['density']:.3f} | {r['dense_ms']:.2f} | "
                         f"{r['masked_ms']:.2f} | {r['ours_ms']:.2f} | "
                         + (f"{r.get('sparseprop_ms', float('nan')):.2f} | " if has_sp else "")
                         + f"{r['floor_ms']:.2f} | {r['speedup_vs_dense']:.2f}x | "
                         f"{r['ours_over_floor']:.1f} |")
    if results["e2e"]:
        caps = any("cap_all" in r for r in results["e2e"])
        lines.append("\n| model | masks | sparsity | dense ms | masked ms | sparsify ms | vs dense "
                     "| layers sparse | conv/linear FLOPs kept |"
                     + (" rest of step ms | cap: swapped at floor | cap: all at floor |"
                        if caps else ""))
        lines.append("|---|---|---|---|---|---|---|---|---|" + "---|" * (3 * caps))
        for r in results["e2e"]:
            lines.append(f"| {r['model']} | {r['method']} | {r['sparsity']} | {r['dense_ms']:.0f} "
                         f"| {r['masked_ms']:.0f} | {r['sparse_ms']:.0f} | "
                         f"{r['speedup_vs_dense']:.2f}x | {r['swapped_layers']}/{r['layers']} | "
                         f"{r.get('kept_flop_fraction', float('nan')):.3f} |"
                         + (f" {r['rest_ms']:.0f} | {r['cap_swapped']:.2f}x | "
                            f"{r['cap_all']:.2f}x |" if "cap_all" in r else ""))
        import inspect

        import sparsepai as sp

        default = inspect.signature(sp.sparsify).parameters["min_sparsity"].default
        ms = {r.get("min_sparsity") for r in results["e2e"]}
        lines.append("\nsparsify: " + (f"the library's default min_sparsity ({default})"
                                       if ms == {None}
                                       else f"min_sparsity {', '.join(map(str, ms))}")
                     + ": layers at least that sparse are candidates, each swapped only where "
                       "it measures faster.")
        if caps:
            lines.append("\nrest of step: the dense step less each of its convolution and linear "
                         "layers timed alone; cap: the dense step over the rest plus the layers "
                         "at their floor (the swapped ones, or all of them), the others dense.")
    _io.atomic_write_bytes(path + ".md", ("\n".join(lines) + "\n").encode())


def plot(results, path):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    rows = [r for r in results["layers"] if r["masks"] == "random"]
    if not rows:
        return

    def label(r):
        return r["layer"] + (f" ({r['tokens']} tok)" if r.get("tokens") else "")

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for layer in dict.fromkeys(map(label, rows)):
        pts = sorted((r["density"], r["speedup_vs_dense"]) for r in rows if label(r) == layer)
        ax.plot([1 - d for d, _ in pts], [s for _, s in pts], marker="o", label=layer)
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_xlabel("sparsity (uniform random masks)")
    ax.set_ylabel("forward + backward speed-up vs dense")
    ax.set_yscale("log")
    ax.set_title(f"sparsepai sparse kernels, batch {results['batch']}, "
                 f"{results['threads']} threads")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    from sparsepai import _io

    _io.save_figure(path + ".png", fig, dpi=110)


def plot_e2e(results, path):
    """``path``_e2e.png: the training step's speed-up over dense per model and masks against
    sparsity, ``sp.sparsify`` and the masked dense layer, with the caps of :func:`step_caps`
    (every layer at its floor dotted, the swapped ones dash-dotted; results without them: the
    kept FLOP fraction's bound)."""
    rows = results["e2e"]
    if not rows:
        return
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    fig, ax = plt.subplots(figsize=(7, 4.5))
    handles = []
    for i, key in enumerate(dict.fromkeys((r["model"], r["method"]) for r in rows)):
        mine = sorted((r for r in rows if (r["model"], r["method"]) == key),
                      key=lambda r: r["sparsity"])
        s = [100 * r["sparsity"] for r in mine]
        ax.plot(s, [r["speedup_vs_dense"] for r in mine], "o-", color=f"C{i}")
        ax.plot(s, [r["dense_ms"] / r["masked_ms"] for r in mine], "x--", color=f"C{i}",
                alpha=0.6)
        ax.plot(s, [r.get("cap_all", 1 / r["kept_flop_fraction"]) for r in mine], "^:",
                color=f"C{i}", alpha=0.6)
        if all("cap_swapped" in r for r in mine):
            ax.plot(s, [r["cap_swapped"] for r in mine], "v-.", color=f"C{i}", alpha=0.6)
        handles.append(Line2D([], [], color=f"C{i}", lw=3, label=f"{key[0]}, {key[1]} masks"))
    handles += [Line2D([], [], color="gray", ls=ls, marker=m, label=text) for ls, m, text in
                (("-", "o", "sp.sparsify"), ("--", "x", "masked dense"),
                 (":", "^", "cap: every layer at its floor" if any("cap_all" in r for r in rows)
                  else "FLOP bound (1 / kept FLOPs)"))]
    if any("cap_swapped" in r for r in rows):
        handles.append(Line2D([], [], color="gray", ls="-.", marker="v",
                              label="cap: swapped layers at their floor, the rest dense"))
    shown = sorted({r["sparsity"] for r in rows} & set(STEP_TARGETS))
    if shown:
        ax.plot([100 * s for s in shown], [STEP_TARGETS[s] for s in shown], "k*", ms=11)
        handles.append(Line2D([], [], color="k", ls="", marker="*", ms=11,
                              label="target (ResNet-18, PaI masks)"))
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_xlabel("sparsity (%)")
    ax.set_ylabel("training step speed-up vs dense")
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}x"))
    ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_yticks([0.5, 0.75, 1, 1.5, 2, 3, 4, 6])
    ax.set_title(f"training step, batch {results['batch']}, {results['threads']} threads")
    ax.legend(handles=handles, fontsize=7)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    from sparsepai import _io

    _io.save_figure(path + "_e2e.png", fig, dpi=110)
    plt.close(fig)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--densities", type=lambda s: [float(v) for v in s.split(",") if v],
                   default=[0.2, 0.1, 0.05, 0.02])
    p.add_argument("--tokens", type=lambda s: [int(v) for v in s.split(",")],
                   default=[512, 2048])
    p.add_argument("--shapes", type=lambda s: [v for v in s.split(",") if v],
                   default=["resnet18", "vgg16", "mlp"],
                   help="per-layer shape sets: resnet18, vgg16 (CIFAR convolutions), mlp "
                        "(default all; --quick: resnet18,mlp)")
    p.add_argument("--pai", type=lambda s: [v for v in s.split(",") if v],
                   default=["prospr", "snip", "magnitude"],
                   help="pruning methods (library defaults) whose per-layer masks time the "
                        "convolutions of each --shapes model")
    p.add_argument("--pai-sparsity", type=float, default=0.95)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--e2e", action="store_true", help="also time whole training steps")
    p.add_argument("--e2e-models", type=lambda s: s.split(","), default=["resnet18", "vgg16"])
    p.add_argument("--e2e-sparsities", type=lambda s: [float(v) for v in s.split(",")],
                   default=[0.9, 0.95, 0.98])
    p.add_argument("--e2e-method", type=lambda s: [v for v in s.split(",") if v],
                   default=["snip"], help="pruning methods of the training steps (comma list)")
    p.add_argument("--e2e-steps", type=int, default=5)
    p.add_argument("--min-sparsity", type=float, default=None,
                   help="sp.sparsify's min_sparsity for the training steps (default: the "
                        "library's)")
    p.add_argument("--no-layers", action="store_true", help="skip the per-layer table")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--quick", action="store_true",
                   help="ResNet-18 and MLP shapes only (overrides --shapes)")
    p.add_argument("--no-lock", action="store_true",
                   help="do not wait for the timing lock (smoke runs; numbers not for reporting)")
    p.add_argument("--out", default=OUT)
    args = p.parse_args()
    if args.quick:
        args.shapes = ["resnet18", "mlp"]
    bad = sorted(set(args.shapes) - set(MODELS) - {"mlp"})
    if bad:
        p.error(f"--shapes: unknown {bad}; valid: {', '.join([*MODELS, 'mlp'])}")
    import torch

    torch.set_num_threads(args.threads)
    try:
        import sparseprop  # noqa: F401
        sparseprop_status = "installed"
    except Exception as exc:  # recorded: why the column is missing
        sparseprop_status = f"not available: {type(exc).__name__}: {exc}"
    with (contextlib.nullcontext() if args.no_lock else timing_lock()):
        load_before = os.getloadavg()
        rates = machine_rates()
        layers = [] if args.no_layers else per_layer(args, rates)
        e2e_rows = e2e(args, rates) if args.e2e else []
        load_after = os.getloadavg()
    results = {**run_header("bench_sparse_train.py", args.out, args.threads, load_before,
                            load_after),
               "batch": args.batch, "sparseprop": sparseprop_status,
               "gemm_gflops": rates[0] / 1e9, "copy_gbytes_per_s": rates[1] / 1e9,
               "layers": layers, "e2e": e2e_rows}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    write(results, args.out)
    plot(results, args.out)
    plot_e2e(results, args.out)
    print(f"wrote {args.out}.json/.md/.png")


if __name__ == "__main__":
    main()
