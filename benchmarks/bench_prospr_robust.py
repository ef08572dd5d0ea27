"""ProsPr robustness sweep: LeNet-5 with PyTorch's *default* layer initialisation (not the
He-normal init of ``sparsepai.experiments.models``), pruned at initialisation and
trained briefly on the MNIST split (../shared/data/mnist: first 8,000 images train, last 2,000
evaluate), several seeds; ProsPr variants (batch protocol, inner learning rate) against SNIP,
magnitude and random.

    python benchmarks/bench_prospr_robust.py   # -> benchmarks/results/prospr_robust.{json,csv,png}

Resumable: every finished run is appended to ``benchmarks/results/prospr_robust_runs.jsonl``;
rerunning the same command skips them. A runs file made with other training settings is
refused. ``--summarize`` rewrites the table, CSV/JSON and plot from the runs file alone.

Each row also records, from the masks alone, how many kept weights lie on no input-to-output
path (``disconnected``: weights of units left without inputs or without outputs), and the test
accuracy after every epoch. A run counts as collapsed when its final accuracy is below
``COLLAPSE`` (chance is ~0.1).
"""

from __future__ import annotations

import argparse
import copy
import csv
import dataclasses
import io
import itertools
import json
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import torch  # noqa: E402

import sparsepai as sp  # noqa: E402
from sparsepai import _io  # noqa: E402
from sparsepai.experiments.data import load_dataset, loader  # noqa: E402
from sparsepai.experiments.sweep import load_rows  # noqa: E402
from sparsepai.experiments.models import get_model  # noqa: E402
from sparsepai.experiments.train import TrainConfig, train  # noqa: E402

COLLAPSE = 0.2
# label: (method, options); the order is the table's and the plot's
VARIANTS = {
    "random": ("random", {}),
    "magnitude": ("magnitude", {}),
    "snip": ("snip", {}),
    "prospr": ("prospr", {"same_batch": False}),  # the default (API.md)
    "prospr_same": ("prospr", {"same_batch": True}),  # the official code's protocol
    "prospr_lr1": ("prospr", {"inner_lr": 1.0, "same_batch": False}),
    "prospr_lr1_same": ("prospr", {"inner_lr": 1.0, "same_batch": True}),
    "prospr_b4": ("prospr", {"batches": 4, "same_batch": False}),
    "snip_b4": ("snip", {"batches": 4}),
    "prospr_lr1_b4": ("prospr", {"inner_lr": 1.0, "batches": 4, "same_batch": False}),
    "prospr_same_b4": ("prospr", {"same_batch": True, "batches": 4}),
}
# run first what the targets need most: the ProsPr variants and SNIP, sparsity by sparsity
BASELINES = ("random", "magnitude")


def default_init(model: torch.nn.Module) -> torch.nn.Module:
    """PyTorch's own layer initialisation (kaiming-uniform with a=sqrt(5): a third of He's
    variance) for every module that defines one."""
    for m in model.modules():
        if m is not model and hasattr(m, "reset_parameters"):
            m.reset_parameters()
    return model


def disconnected(model: torch.nn.Module, masks: dict, input_shape) -> int:
    """Kept weights that lie on no path from the input to the output.

    The network is made linear and positive (|w| * mask, zero biases, float64, eval mode) and
    fed a positive input: every unit on a surviving path is then active, a unit without inputs
    outputs 0 (ReLU passes no gradient), and d(sum of outputs)/dw * w > 0 exactly for the
    weights on some input-to-output path.
    """
    net = copy.deepcopy(model).double().eval()
    params = dict(net.named_parameters())
    with torch.no_grad():
        for n, p in params.items():
            p.copy_(p.abs() * masks[n] if n in masks else torch.zeros_like(p))
    g = torch.Generator().manual_seed(0)
    x = 1 + torch.rand((4,) + tuple(input_shape), generator=g, dtype=torch.float64)
    grads = torch.autograd.grad(net(x).sum(), [params[n] for n in masks])
    on_path = sum(int(((gr * params[n]) > 0).sum()) for n, gr in zip(masks, grads))
    return sum(int(m.sum()) for m in masks.values()) - on_path


def run_one(label, sparsity, seed, data, tcfg: TrainConfig, prune_batch: int,
            init: str = "default") -> dict:
    train_set, test_set, info = data
    method, options = VARIANTS[label]
    torch.manual_seed(seed)
    model = get_model("lenet5", info.num_classes, info.in_channels, info.image_size)
    if init == "default":  # else the He-normal init of sparsepai.experiments.models
        default_init(model)
    batches = loader(train_set, prune_batch, shuffle=True, seed=seed)
    t0 = time.perf_counter()
    masks = sp.prune(model, method, sparsity, batches, **options)
    prune_s = time.perf_counter() - t0
    lost = disconnected(model, masks, (info.in_channels, info.image_size, info.image_size))
    res = train(model, masks, train_set, test_set, dataclasses.replace(tcfg, seed=seed),
                progress=False)
    return {"variant": label, "sparsity": sparsity, "seed": seed, "test_acc": res["test_acc"],
            "collapsed": res["test_acc"] < COLLAPSE, "curve": res["test_acc_curve"],
            "kept": sum(int(m.sum()) for m in masks.values()), "disconnected": lost,
            "prune_seconds": prune_s, "train_loss": res["train_loss"][-1]}


def _inner_steps(model, b, lr: float) -> dict:
    """Losses of 3 plain SGD steps on b[0..2] and the meta-loss on b[3], and each weight's
    relative change."""
    work = copy.deepcopy(model)
    opt = torch.optim.SGD(work.parameters(), lr=lr)
    w0 = {n: p.detach().clone() for n, p in work.named_parameters() if n.endswith("weight")}
    losses = []
    for x, y in b[:3]:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(work(x), y)
        loss.backward()
        opt.step()
        losses.append(round(loss.item(), 3))
    with torch.no_grad():  # the meta-loss, on D_3
        losses.append(round(torch.nn.functional.cross_entropy(work(b[3][0]), b[3][1]).item(), 3))
    rel = {n: round(float((p.detach() - w0[n]).norm() / w0[n].norm()), 4)
           for n, p in work.named_parameters() if n in w0}
    return {"inner_losses": losses, "weight_change": rel}


@torch.no_grad()
def _signal(model, masks, x) -> float:
    """How much the masked model's logits depend on the input: their std over the batch,
    averaged over classes."""
    net = copy.deepcopy(model)
    params = dict(net.named_parameters())
    for n, m in masks.items():
        params[n].mul_(m)
    return round(float(net(x).std(0).mean()), 5)


def diagnose(data, seeds, prune_batch: int, path: str):
    """The measurements behind the cause (no training): for each init and seed, the loss and the
    relative weight change over ProsPr's 3 inner SGD steps at lr 0.1 and 1.0 (M+1 distinct
    batches); at 95% the overlap (kept in both / kept) of masks: SNIP on D_0 against SNIP on
    D_1..D_3 (sampling noise), the old ProsPr default against SNIP on D_3 and on D_0,
    ``same_batch=True`` against SNIP on D_0, and the masked logits' input dependence; at 99% the
    weights each layer keeps."""
    train_set, _, info = data

    def overlap(a, b):
        fa = torch.cat([m.flatten() for m in a.values()])
        fb = torch.cat([m.flatten() for m in b.values()])
        return round(float((fa & fb).sum() / fa.sum()), 3)

    out = []
    for init in ("default", "he"):
        for seed in seeds:
            torch.manual_seed(seed)
            model = get_model("lenet5", info.num_classes, info.in_channels, info.image_size)
            if init == "default":
                default_init(model)
            b = list(itertools.islice(loader(train_set, prune_batch, shuffle=True, seed=seed), 4))
            steps = {lr: _inner_steps(model, b, lr) for lr in (0.1, 1.0)}
            snip = [sp.prune(model, "snip", 0.95, [bi]) for bi in b]
            old = sp.prune(model, "prospr", 0.95, b, same_batch=False)
            same = sp.prune(model, "prospr", 0.95, b, same_batch=True)
            x = b[0][0]
            layers99 = {lab: [int(m.sum()) for m in sp.prune(model, meth, 0.99, b, **o).values()]
                        for lab, meth, o in [("snip", "snip", {}), ("prospr_same", "prospr", {}),
                                             ("magnitude", "magnitude", {})]}
            row = {"init": init, "seed": seed,
                   **{f"lr{lr}_{k}": v for lr, kv in steps.items() for k, v in kv.items()},
                   "logit_signal_95": {lab: _signal(model, m, x)
                                       for lab, m in [("snip", snip[0]), ("old", old),
                                                      ("same", same)]},
                   "kept_per_layer_99": layers99,
                   "snip_D0_vs_D1_D2_D3": [overlap(snip[0], s) for s in snip[1:]],
                   "old_prospr_vs_snip_D3": overlap(old, snip[3]),
                   "old_prospr_vs_snip_D0": overlap(old, snip[0]),
                   "same_batch_vs_snip_D0": overlap(same, snip[0])}
            out.append(row)
            print(json.dumps(row), flush=True)
    _io.atomic_write_bytes(path, json.dumps(out, indent=1).encode())


def summarize(rows, variants, sparsities):
    """{(variant, sparsity): {mean, std, min, n, collapsed, disconnected}}."""
    out = {}
    for v in variants:
        for s in sparsities:
            rs = [r for r in rows if r["variant"] == v and r["sparsity"] == s]
            if not rs:
                continue
            acc = [r["test_acc"] for r in rs]
            out[(v, s)] = {"mean": statistics.mean(acc),
                           "std": statistics.pstdev(acc) if len(acc) > 1 else 0.0,
                           "min": min(acc), "n": len(acc),
                           "collapsed": sum(r["collapsed"] for r in rs),
                           "disconnected": statistics.mean(r["disconnected"] / r["kept"]
                                                           for r in rs)}
    return out


def table(rows, variants, sparsities) -> str:
    s = summarize(rows, variants, sparsities)
    w = max(len(v) for v in variants) + 2
    lines = ["test accuracy (%): mean +- std [min] (collapsed runs, acc < "
             f"{100 * COLLAPSE:.0f}%); columns: sparsity",
             f"{'variant':<{w}}" + "".join(f"{100 * x:>27.1f}%" for x in sparsities)]
    for v in variants:
        cells = []
        for x in sparsities:
            c = s.get((v, x))
            cells.append(f"{100 * c['mean']:6.1f} +-{100 * c['std']:5.1f} [{100 * c['min']:5.1f}]"
                         f" ({c['collapsed']}/{c['n']})" if c else f"{'-':>28}")
        lines.append(f"{v:<{w}}" + "".join(f"{c:>28}" for c in cells))
    lines.append("kept weights on no input-output path (mean %, per sparsity): " + "; ".join(
        f"{v} " + "/".join(f"{100 * s[(v, x)]['disconnected']:.1f}" if (v, x) in s else "-"
                           for x in sparsities) for v in variants))
    return "\n".join(lines)


def plot(rows, variants, sparsities, path, init_name):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = summarize(rows, variants, sparsities)
    fig, ax = plt.subplots(figsize=(8, 5))
    colors = plt.get_cmap("tab20").colors
    names = {"prospr": "prospr, M+1 batches (old default)", "prospr_same": "prospr_same (default)"}
    for i, v in enumerate(variants):
        xs = [j + (i - len(variants) / 2) * 0.035 for j in range(len(sparsities))]
        pts = [(x, sp_) for x, sp_ in zip(xs, sparsities) if (v, sp_) in s]
        if not pts:
            continue
        line, = ax.plot([p[0] for p in pts], [100 * s[(v, p[1])]["mean"] for p in pts],
                        marker="o", label=names.get(v, v), color=colors[2 * i % 20 + i // 10],
                        lw=2.5 if v in names else 1)
        for x, sp_ in pts:  # every seed, so a collapse is visible beside the mean
            accs = [100 * r["test_acc"] for r in rows if r["variant"] == v and r["sparsity"] == sp_]
            ax.scatter([x] * len(accs), accs, s=9, color=line.get_color(), alpha=0.5)
    ax.set_xticks(range(len(sparsities)))
    ax.set_xticklabels([f"{100 * x:g}%" for x in sparsities])
    ax.set(xlabel="sparsity", ylabel="test accuracy (%)",
           title=f"LeNet-5 ({init_name} init), MNIST split: ProsPr variants (dots: seeds)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    _io.save_figure(path, fig, dpi=120)
    plt.close(fig)


def write(rows, settings, variants, sparsities, prefix, command):
    s = summarize(rows, variants, sparsities)
    _io.atomic_write_bytes(prefix + ".json", json.dumps(
        {"command": command, "settings": settings,
         "summary": [{"variant": k[0], "sparsity": k[1], **v} for k, v in s.items()],
         "runs": rows}, indent=1).encode())
    buf = io.StringIO()
    cols = ["variant", "sparsity", "seed", "test_acc", "collapsed", "kept", "disconnected",
            "prune_seconds", "train_loss"]
    wr = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
    wr.writeheader()
    wr.writerows(rows)
    _io.atomic_write_bytes(prefix + ".csv", buf.getvalue().encode())
    plot(rows, variants, sparsities, prefix + ".png", settings["init"])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root",
                    default=os.path.join(HERE, "..", "..", "shared", "data", "mnist"))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    ap.add_argument("--sparsities", nargs="+", type=float, default=[0.95, 0.98, 0.99])
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--init", choices=["default", "he"], default="default",
                    help="PyTorch's default layer init, or sparsepai.experiments.models' He-normal init")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "prospr_robust"),
                    help="prefix of the outputs (.json, .csv, .png, _runs.jsonl)")
    ap.add_argument("--summarize", action="store_true", help="run nothing; rewrite the outputs")
    ap.add_argument("--diagnose", action="store_true",
                    help="no training: inner-step losses, weight changes and mask overlaps, both "
                    "inits (-> <out>_diagnose.json)")
    args = ap.parse_args()
    torch.set_num_threads(1)  # a shared CPU; LeNet-5 gains little from more
    tcfg = TrainConfig(epochs=args.epochs, batch_size=128, lr=args.lr)
    prune_batch = 128
    init_name = {"default": "pytorch-default", "he": "he-normal"}[args.init]
    settings = {"model": "lenet5", "init": init_name, "dataset": "mnist-split",
                "prune_batch": prune_batch, "train": dataclasses.asdict(tcfg)}
    log = args.out + "_runs.jsonl"
    rows = load_rows(log)
    other = [r for r in rows if r.get("settings") != settings]
    if other:
        raise SystemExit(f"{log} holds {len(other)} runs made with other settings; use another "
                         "--out")
    command = " ".join(["python", os.path.relpath(sys.argv[0])] + sys.argv[1:])
    if args.diagnose:
        data = load_dataset("mnist", os.path.abspath(args.data_root))
        return diagnose(data, args.seeds, prune_batch, args.out + "_diagnose.json")
    if not args.summarize:
        if not os.path.isdir(args.data_root):
            raise SystemExit(f"MNIST IDX files not found in {args.data_root}")
        data = load_dataset("mnist", os.path.abspath(args.data_root))
        done = {(r["variant"], r["sparsity"], r["seed"]) for r in rows}
        first = [v for v in args.variants if v not in BASELINES]
        last = [v for v in args.variants if v in BASELINES]
        plan = [(v, x, s) for x in args.sparsities for s in args.seeds for v in first]
        plan += [(v, x, s) for x in reversed(args.sparsities) for s in args.seeds for v in last]
        for i, key in enumerate(p for p in plan if p not in done):
            row = dict(run_one(*key, data, tcfg, prune_batch, args.init), settings=settings)
            rows.append(row)
            with open(log, "a") as f:
                f.write(json.dumps(row) + "\n")
            print(f"{key[0]:>16} {100 * key[1]:.0f}% seed {key[2]}: {100 * row['test_acc']:.2f}%"
                  f"  (disconnected {row['disconnected']}/{row['kept']})", flush=True)
    variants = [v for v in VARIANTS if v in args.variants]
    write(rows, settings, variants, args.sparsities, args.out, command)
    print(table(rows, variants, args.sparsities))


if __name__ == "__main__":
    main()
