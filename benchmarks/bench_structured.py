"""Structured pruning at initialization on this CPU: the ProsPr paper's Table 7 experiment.

For the CIFAR ResNet-18 and VGG-19 (100 classes, 32x32 inputs, batch 128): ProsPr channel
masks at 80/90/95% structured sparsity, ``sp.slim`` of each, and against the unpruned model,
in the same run:
  - training-step wall-clock (forward, backward, torch.optim.SGD step with momentum and weight
    decay), median over interleaved repetitions;
  - inference latency (eval mode, no grad) at batch 128 and batch 1;
  - forward FLOPs (torch.utils.flop_counter) and parameters.
Then the time ``sp.slim`` takes for torchvision's ResNet-50 (graph analysis plus rebuild), and
accuracy after a short training on the MNIST test split (../shared/data/mnist: the first 2,000
of its 8,000 training images, 2 epochs, evaluated on the 2,000 held out) for the same two
models shrunk to fit (1 input channel, 10 classes, images zero-padded to 32x32), each slim model
trained with plain torch.optim.SGD (sparsepai.experiments.train with no masks).

ProsPr masks need data: the timing masks are scored on MNIST images padded to 32x32 and
repeated over 3 channels (there is no CIFAR on this machine); they decide only how many
channels each layer keeps, which is what the timings depend on.

    python benchmarks/bench_structured.py              # ~40 min on 2 cores
    python benchmarks/bench_structured.py --quick      # a smoke run, a few minutes

Results: benchmarks/results/structured/{results.json,timing.csv,accuracy.csv,structured.png}.
Targets: training step at 95% >= 4x faster than unpruned for ResNet-18 and >= 3x for
VGG-19; at 80% >= 1.8x for both; slimming ResNet-50 under 5 s.
"""

from __future__ import annotations

import argparse
import copy
import csv
import io
import json
import os
import platform
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
from sparsepai import _io  # noqa: E402  (cheap: the package imports torch lazily)

OUT = os.path.join(HERE, "results", "structured")
MNIST = os.path.join(os.path.dirname(os.path.dirname(HERE)), "shared", "data", "mnist")


def mnist(size, channels):
    import torch
    import torch.nn.functional as F

    from sparsepai.experiments.data import load_dataset

    train, test, _ = load_dataset("mnist", MNIST)

    def convert(ds):
        xs = torch.stack([ds[i][0] for i in range(len(ds))])
        ys = torch.tensor([int(ds[i][1]) for i in range(len(ds))])
        if size == 14:
            xs = F.avg_pool2d(xs, 2)
        elif size == 32:
            xs = F.pad(xs, (2, 2, 2, 2))
        return torch.utils.data.TensorDataset(xs.repeat(1, channels, 1, 1), ys)

    return convert(train), convert(test)


def batches(ds, n, batch, seed=0):
    import torch

    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(ds), generator=g)
    out = []
    for i in range(n):
        idx = perm[i * batch:(i + 1) * batch]
        xs, ys = ds[idx]
        out.append((xs, ys))
    return out


VARIANTS = ("prospr", "prospr+cost", "prospr/channels")


def prospr_masks(model, data, sparsities, meta_steps=3):
    """One ProsPr channel scoring, thresholded at every sparsity: as is ("prospr"), with 3SP's
    compute weighting ("prospr+cost": each channel's score divided by its relative
    multiply-adds, what ``cost_weighting=True`` does), and as is but with the sparsity counted
    in channels instead of weights ("prospr/channels": ``unit="channels"``)."""
    import torch

    from sparsepai.structured.analysis import analyse
    from sparsepai.structured.cost import channel_costs
    from sparsepai.structured.prune import group_scores, threshold_channels

    graph = analyse(model)
    t0 = time.perf_counter()
    scores = group_scores(model, graph, "prospr", data, torch.nn.functional.cross_entropy,
                          {"meta_steps": meta_steps})
    t_score = time.perf_counter() - t0
    cost = channel_costs(model, graph, data)
    mean = torch.cat(list(cost.values())).mean()
    weighted = {g: s * mean / cost[g] for g, s in scores.items()}
    out = {}
    for s in sparsities:
        out[("prospr", s)] = threshold_channels(model, graph, scores, s)
        out[("prospr+cost", s)] = threshold_channels(model, graph, weighted, s)
        out[("prospr/channels", s)] = threshold_channels(model, graph, scores, s, "channels")
    return out, t_score


def flops(model, x):
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model(x)
    return fc.get_total_flops()


def weights(model):
    return sum(p.numel() for p in model.parameters()) if model is not None else 0


def time_training(models, steps, reps, batch, shape, classes):
    """Median seconds per training step for each model, repetitions interleaved across models
    so that machine noise hits all of them alike."""
    import torch

    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, *shape, generator=g)
    y = torch.randint(0, classes, (batch,), generator=g)
    opts = {k: torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
            for k, m in models.items()}
    times = {k: [] for k in models}

    def step(k):
        m, opt = models[k], opts[k]
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(m(x), y).backward()
        opt.step()

    for k in models:  # warm-up: allocator, oneDNN primitive caches
        models[k].train()
        step(k)
    for _ in range(reps):
        for k in models:
            for _ in range(steps):
                t0 = time.perf_counter()
                step(k)
                times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}, times


def time_inference(models, reps, batch, shape):
    import torch

    x = torch.randn(batch, *shape)
    times = {k: [] for k in models}
    with torch.no_grad():
        for m in models.values():
            m.eval()(x)
        for _ in range(reps):
            for k, m in models.items():
                t0 = time.perf_counter()
                m(x)
                times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small smoke run")
    ap.add_argument("--steps", type=int, default=3, help="timed training steps per repetition")
    ap.add_argument("--reps", type=int, default=3, help="interleaved repetitions")
    ap.add_argument("--epochs", type=int, default=2, help="epochs of the accuracy runs")
    ap.add_argument("--train-images", type=int, default=2000,
                    help="training images of the accuracy runs (of the 8,000)")
    ap.add_argument("--acc-variants", default="prospr",
                    help="mask variants trained in the accuracy part (prospr, prospr+cost)")
    ap.add_argument("--models", default="resnet18,vgg19")
    ap.add_argument("--part", choices=("all", "timing", "accuracy"), default="all",
                    help="run one part; the other part's results in --out are kept")
    ap.add_argument("--out", default=OUT)
    ap.add_argument("--replot", action="store_true",
                    help="only redraw the plot from --out/results.json")
    args = ap.parse_args()
    if args.replot:
        with open(os.path.join(args.out, "results.json")) as f:
            plot(json.load(f), os.path.join(args.out, "structured.png"))
        return

    import torch

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    os.makedirs(args.out, exist_ok=True)
    sparsities = [0.8, 0.9, 0.95]
    batch = 16 if args.quick else 128
    steps, reps = (1, 1) if args.quick else (args.steps, args.reps)
    names = args.models.split(",")
    command = "python benchmarks/bench_structured.py " + " ".join(sys.argv[1:])
    res = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
           "batch": batch, "timing": [], "accuracy": [], "slim_resnet50": {}, "commands": {},
           "train_images": None}
    prev = os.path.join(args.out, "results.json")
    if args.part != "all" and os.path.exists(prev):
        with open(prev) as f:
            res.update({k: v for k, v in json.load(f).items() if k in res})
    parts = ("timing", "accuracy") if args.part == "all" else (args.part,)
    for part in parts:
        key = part if part == "timing" else f"accuracy {args.acc_variants}"
        res["commands"][key] = command
    if "accuracy" in res["commands"] and "accuracy" in parts:
        # the first accuracy run (dense + prospr rows) was recorded under this key
        res["commands"]["accuracy dense,prospr"] = res["commands"].pop("accuracy")
    if "timing" in parts:
        res["timing"], res["slim_resnet50"], res["batch"] = [], {}, batch
        timing(args, res, names, sparsities, batch, steps, reps)
    if "accuracy" in parts:
        res["train_images"] = 512 if args.quick else args.train_images
        # rows of mask variants not rerun are kept (dense rows too, so the dense run is reused)
        keep = set(args.acc_variants.split(",")) if args.part == "accuracy" else set()
        res["accuracy"] = [r for r in res["accuracy"]
                           if r["masks"] not in keep and r["model"] in names]
        accuracy(args, res, names, sparsities)
    write(res, args.out)


def timing(args, res, names, sparsities, batch, steps, reps):
    import torch

    import sparsepai as sp
    from sparsepai.experiments.models import get_model

    train32, _ = mnist(32, 3)
    for name in names:
        torch.manual_seed(0)
        dense = get_model(name, num_classes=100)
        data = batches(train32, 4, batch)
        masks, t_score = prospr_masks(dense, data, sparsities)
        models = {("dense", 0.0): dense}
        for key, m in masks.items():
            models[key] = sp.slim(dense, m)
        x1 = torch.randn(1, 3, 32, 32)
        fl = {s: flops(m, x1) for s, m in models.items()}
        print(f"{name}: timing {len(models)} models, {reps} x {steps} steps each", flush=True)
        step_t, raw = time_training(models, steps, reps, batch, (3, 32, 32), 100)
        inf_b = time_inference(models, 3 if args.quick else 5, batch, (3, 32, 32))
        inf_1 = time_inference(models, 5 if args.quick else 20, 1, (3, 32, 32))
        d = ("dense", 0.0)
        for k, m in models.items():
            row = {"model": name, "masks": k[0], "sparsity": k[1], "params": weights(m),
                   "param_ratio": weights(dense) / weights(m),
                   "flops": fl[k], "flop_ratio": fl[d] / fl[k],
                   "train_step_s": step_t[k], "train_speedup": step_t[d] / step_t[k],
                   "train_step_all_s": raw[k],
                   "infer_b_s": inf_b[k], "infer_b_speedup": inf_b[d] / inf_b[k],
                   "infer_1_s": inf_1[k], "infer_1_speedup": inf_1[d] / inf_1[k],
                   "prospr_score_s": t_score}
            res["timing"].append(row)
            print(f"  {k[0]} {k[1]:.2f}: step {step_t[k]:.3f} s ({row['train_speedup']:.2f}x), "
                  f"FLOPs {row['flop_ratio']:.2f}x fewer, infer@{batch} "
                  f"{row['infer_b_speedup']:.2f}x, infer@1 {row['infer_1_speedup']:.2f}x",
                  flush=True)
        del models, dense

    # ---- slimming time, torchvision ResNet-50
    import torchvision

    r50 = torchvision.models.resnet50()
    m50 = sp.prune(r50, "magnitude", 0.9, structured=True,
                   example_inputs=torch.randn(2, 3, 224, 224))
    ts = []
    for _ in range(2 if args.quick else 5):
        t0 = time.perf_counter()
        sp.slim(r50, m50)
        ts.append(time.perf_counter() - t0)
    res["slim_resnet50"] = {"median_s": statistics.median(ts), "all_s": ts,
                            "params_dense": weights(r50)}
    print(f"slim(resnet50): {statistics.median(ts):.2f} s", flush=True)


def accuracy(args, res, names, sparsities):
    import torch
    from tqdm.auto import tqdm

    import sparsepai as sp
    from sparsepai.experiments.models import get_model
    from sparsepai.experiments.train import TrainConfig, train

    # ---- accuracy after a short training, models shrunk to fit (MNIST, 1 channel, 32x32)
    full, test_set = mnist(32, 1)
    train_set = torch.utils.data.Subset(full, range(512 if args.quick else args.train_images))
    if args.quick:
        test_set = torch.utils.data.Subset(test_set, range(256))
    epochs = 1 if args.quick else args.epochs
    cfg = TrainConfig(epochs=epochs, batch_size=128, lr=0.05, momentum=0.9, weight_decay=5e-4,
                      seed=0)
    variants = args.acc_variants.split(",")
    bar = tqdm(total=len(names) * (len(variants) * len(sparsities) + 1), desc="accuracy runs")
    for name in names:
        torch.manual_seed(0)
        dense = get_model(name, num_classes=10, in_channels=1, image_size=32)
        masks, _ = prospr_masks(dense, batches(full, 4, 128, seed=1), sparsities)
        have_dense = any(r["model"] == name and r["masks"] == "dense" for r in res["accuracy"])
        todo = ([] if have_dense else [("dense", 0.0)]) + [k for k in masks if k[0] in variants]
        for key in todo:
            m = sp.slim(dense, masks[key]) if key[1] else copy.deepcopy(dense)
            t0 = time.perf_counter()
            out = train(m, None, train_set, test_set, cfg, progress=False)
            row = {"model": name, "masks": key[0], "sparsity": key[1], "params": weights(m),
                   "epochs": epochs,
                   "test_acc": out["test_acc"], "train_s": time.perf_counter() - t0,
                   "train_loss": out["train_loss"]}
            res["accuracy"].append(row)
            res["accuracy"].sort(key=lambda r: (names.index(r["model"]), r["masks"] != "dense",
                                                r["masks"], r["sparsity"]))
            bar.update()
            print(f"  {name} {key[0]} {key[1]:.2f}: acc {row['test_acc']:.4f}, "
                  f"{row['train_s']:.0f} s", flush=True)
    bar.close()


def write(res, out):
    _io.atomic_write_bytes(os.path.join(out, "results.json"), json.dumps(res, indent=1).encode())
    keys = ["model", "masks", "sparsity", "params", "param_ratio", "flops", "flop_ratio",
            "train_step_s", "train_speedup", "infer_b_s", "infer_b_speedup", "infer_1_s",
            "infer_1_speedup"]
    buf = io.StringIO()
    w = csv.DictWriter(buf, keys, extrasaction="ignore")
    w.writeheader()
    w.writerows(res["timing"])
    _io.atomic_write_bytes(os.path.join(out, "timing.csv"), buf.getvalue().encode())
    buf = io.StringIO()
    w = csv.DictWriter(buf, ["model", "masks", "sparsity", "params", "epochs", "test_acc",
                             "train_s"],
                       extrasaction="ignore")
    w.writeheader()
    w.writerows(res["accuracy"])
    _io.atomic_write_bytes(os.path.join(out, "accuracy.csv"), buf.getvalue().encode())
    plot(res, os.path.join(out, "structured.png"))


def plot(res, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    names = sorted({r["model"] for r in res["timing"]})
    for name in names:
        for variant, style in (("prospr", "-"), ("prospr+cost", ":"), ("prospr/channels", "--")):
            rows = [r for r in res["timing"] if r["model"] == name
                    and r["masks"] in ("dense", variant)]
            s = [100 * r["sparsity"] for r in rows]
            line, = axes[0].plot(s, [r["train_speedup"] for r in rows], "o" + style,
                                 label=f"{name} {variant}: step time")
            axes[0].plot(s, [r["flop_ratio"] for r in rows], "x" + style, alpha=0.5,
                         color=line.get_color(), label=f"{name} {variant}: FLOPs")
    axes[0].set_xlabel("structured sparsity (% of weights, ProsPr channel masks)")
    axes[0].set_ylabel("speedup over unpruned (same run)")
    axes[0].set_yscale("log")
    axes[0].legend(fontsize=7)
    axes[0].set_title(f"Training step, batch {res['batch']}, 32x32, 2-core CPU")
    for name in sorted({r["model"] for r in res["accuracy"]}):
        for variant, style in (("prospr", "o-"), ("prospr+cost", "s:"),
                               ("prospr/channels", "^--")):
            rows = [r for r in res["accuracy"] if r["model"] == name
                    and r["masks"] in ("dense", variant)]
            if all(r["masks"] == "dense" for r in rows):
                continue  # this variant was not trained
            axes[1].plot([100 * r["sparsity"] for r in rows],
                         [100 * r["test_acc"] for r in rows], style, label=f"{name} {variant}")
    axes[1].set_xlabel("structured sparsity (%)")
    axes[1].set_ylabel("held-out accuracy (%)")
    epochs = sorted({r.get("epochs") for r in res["accuracy"]} - {None})
    images = res.get("train_images")
    budget = (f"{'/'.join(map(str, epochs))} epochs" if epochs else "")
    budget += f" on {images:,} images" if images else ""
    axes[1].set_title(f"MNIST (32x32 padded), slim models, {budget}", fontsize=10)
    axes[1].legend()
    fig.tight_layout()
    _io.save_figure(path, fig, dpi=120)


if __name__ == "__main__":
    main()
