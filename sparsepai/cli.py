"""The ``sparsepai`` command line.

    sparsepai demo    global magnitude pruning of a real network's weights with sp.topk_mask,
                      checked against and timed beside torch.topk / torch.kthvalue on the
                      concatenated scores
    sparsepai bench   time sp.topk_mask against torch.kthvalue(cat) at chosen sizes

(The pruning, training and sweep commands come with the pruning layer.)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time


def _timed(fn, repeats):
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def _weights(arch: str, seed: int):
    import torch

    torch.manual_seed(seed)
    if arch == "synthetic":
        g = torch.Generator().manual_seed(seed)
        return {f"layer{i}.weight": torch.randn(64 * (i + 1), 64 * (i + 1), generator=g)
                for i in range(12)}
    import torchvision

    model = getattr(torchvision.models, arch)(weights=None)
    return {n: p.detach() for n, p in model.named_parameters() if p.dim() > 1}


def cmd_demo(args) -> int:
    import torch
    from tqdm import tqdm

    import sparsepai as sp

    if args.threads:
        torch.set_num_threads(args.threads)
    weights = _weights(args.arch, args.seed)
    names = list(weights)
    scores = [w.abs() for w in weights.values()]
    n = sum(s.numel() for s in scores)
    k = n - round(args.sparsity * n)
    print(f"{args.arch}: {len(scores)} weight tensors, {n:,} weights; keeping {k:,} "
          f"({100 * (1 - args.sparsity):.1f}%) by global magnitude, {torch.get_num_threads()} threads")

    runs = {}
    bar = tqdm(["sparsepai.topk_mask", "torch.topk(cat)", "torch.kthvalue(cat)"], desc="timing",
               leave=False)
    for name in bar:
        bar.set_postfix_str(name)
        if name == "sparsepai.topk_mask":
            runs[name] = _timed(lambda: sp.topk_mask(scores, k), args.repeats)
        elif name == "torch.topk(cat)":
            def f():
                flat = torch.cat([s.reshape(-1) for s in scores])
                return torch.topk(flat, k, sorted=False)
            runs[name] = _timed(f, args.repeats)
        else:
            runs[name] = _timed(
                lambda: torch.kthvalue(torch.cat([s.reshape(-1) for s in scores]), n - k + 1),
                args.repeats)
    res = runs["sparsepai.topk_mask"][1]
    kept = sum(int(m.sum()) for m in res.masks)
    # independent check: the k-th largest of torch.topk is our threshold, and the masks keep
    # exactly the scores above it plus ties in position order
    topv = runs["torch.topk(cat)"][1].values
    assert kept == k, (kept, k)
    assert float(topv.min()) == float(res.threshold), (float(topv.min()), float(res.threshold))

    print(f"\n{'layer':<40}{'weights':>12}{'kept':>12}{'density':>9}")
    for name, s, m in zip(names, scores, res.masks):
        km = int(m.sum())
        print(f"{name:<40}{s.numel():>12,}{km:>12,}{km / max(1, s.numel()):>9.3f}")
    print(f"{'total':<40}{n:>12,}{kept:>12,}{kept / n:>9.3f}")
    print(f"\nthreshold |w| = {float(res.threshold):.6g} (matches torch.topk's k-th value)")
    base = runs["sparsepai.topk_mask"][0]
    print(f"\n{'method':<24}{'median time':>14}{'vs sparsepai':>14}")
    for name, (t, _) in runs.items():
        print(f"{name:<24}{t * 1e3:>11.1f} ms{t / base:>13.1f}x")
    return 0


def cmd_bench(args) -> int:
    import torch

    import sparsepai as sp

    print(f"{'N':>14}{'topk_mask':>12}{'kthvalue(cat)':>15}{'ratio':>8}")
    for size in args.sizes:
        n = int(size)
        g = torch.Generator().manual_seed(0)
        parts = [t.abs() for t in torch.randn(n, generator=g).chunk(args.tensors)]
        k = n // 10
        t_sp, _ = _timed(lambda: sp.topk_mask(parts, k), args.repeats)
        t_kv, _ = _timed(lambda: torch.kthvalue(torch.cat(parts), n - k + 1), args.repeats)
        print(f"{n:>14,}{t_sp:>11.3f}s{t_kv:>14.3f}s{t_kv / t_sp:>7.1f}x")
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="sparsepai", description="Pruning at initialization.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("demo", help="global top-k pruning of a real network's weights, timed",
                       description=cmd_demo.__doc__ or "Global magnitude pruning with sp.topk_mask.")
    d.add_argument("--arch", default="resnet50",
                   help="torchvision model name (random init) or 'synthetic' (default: resnet50)")
    d.add_argument("--sparsity", type=float, default=0.9, help="fraction pruned (default: 0.9)")
    d.add_argument("--repeats", type=int, default=5, help="timing repeats, median (default: 5)")
    d.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's)")
    d.add_argument("--seed", type=int, default=0, help="initialisation seed (default: 0)")
    d.set_defaults(fn=cmd_demo)
    b = sub.add_parser("bench", help="time sp.topk_mask against torch.kthvalue(cat)",
                       description="Median times at the given sizes (k = N/10).")
    b.add_argument("--sizes", nargs="+", type=float, default=[1e6, 1e7],
                   help="numbers of scores (default: 1e6 1e7)")
    b.add_argument("--tensors", type=int, default=60, help="tensors the scores are split into")
    b.add_argument("--repeats", type=int, default=3, help="timing repeats, median (default: 3)")
    b.set_defaults(fn=cmd_bench)
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "sparsity", 0.5) is not None and not 0 <= getattr(args, "sparsity", 0.5) < 1:
        print("sparsepai: --sparsity must be in [0, 1)", file=sys.stderr)
        return 2
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
