"""``sparsepai prune``: prune a freshly initialized model, masks to a safetensors file."""

from __future__ import annotations

import time

from sparsepai.cli import common

HELP = "prune a model at initialization, masks to a file"
DESCRIPTION = "Score a freshly initialized model and write keep-masks (safetensors)."


def add_arguments(p) -> None:
    common.add_model_data(p)
    p.add_argument("--method", required=True, help="random, magnitude, snip, grasp, synflow, "
                   "force, prospr, autosparse (with --predictor)")
    p.add_argument("--predictor", default=None, help="autosparse: the predictor file from "
                   "'sparsepai train-predictor'")
    p.add_argument("--unseen-layers", default=None, choices=["error", "predict"],
                   help="autosparse: layer types the predictor never saw are an error "
                   "(default) or scored anyway ('predict')")
    p.add_argument("--sparsity", type=common.sparsity, required=True,
                   help="fraction removed, [0, 1)")
    p.add_argument("--batch-size", type=common.positive_int, default=128,
                   help="batch size of the scoring data (128)")
    p.add_argument("--option", action="append", metavar="KEY=VALUE",
                   help="a method option, e.g. meta_steps=3 (repeatable)")
    p.add_argument("--out", default="masks.safetensors", help="masks file (masks.safetensors)")
    p.add_argument("--structured", action="store_true",
                   help="channel pruning: masks over output channels (methods magnitude, "
                   "random, snip = 3SP, prospr); sparsity counts the weights removed")
    p.add_argument("--slim-out", default=None,
                   help="with --structured, also write the physically smaller model here "
                   "(safetensors: weights plus the masks that rebuild its structure)")


def check(args) -> dict:
    """Every argument checked before any work; returns the method's options."""
    from sparsepai.core.registry import get_method

    common.check_model_data(args)
    try:
        get_method(args.method)
    except ValueError as exc:
        raise common.UsageError(str(exc)) from None
    if args.slim_out and not args.structured:
        raise common.UsageError("--slim-out needs --structured (only channel pruning makes a "
                                "slim model)")
    options = common.method_options(args.option)
    check_options(args, options)
    if args.method == "autosparse" and not args.predictor:
        raise common.UsageError("autosparse needs predictor: --predictor FILE (from 'sparsepai "
                                "train-predictor')")
    if args.predictor:
        common.check_input_file(args.predictor, "--predictor")
        options["predictor"] = args.predictor
    if args.unseen_layers:
        options["unseen_layers"] = args.unseen_layers
    common.check_out(args.out)
    if args.slim_out:
        common.check_out(args.slim_out, "--slim-out")
    common.check_distinct([("--predictor", args.predictor)],
                          [("--out", args.out), ("--slim-out", args.slim_out)])
    return options


# options sp.prune takes besides the method's own (see sparsepai.api.prune)
_GENERAL = ("prunable", "scope", "min_per_layer", "unit", "norm_streams", "cost_weighting",
            "example_inputs")


def check_options(args, options: dict) -> None:
    """The method's own options checked (types and ranges) and, with ``--structured``, the
    method one that prunes channels: before the data loads."""
    from sparsepai.core.options import make_config
    from sparsepai.core.registry import get_method

    try:
        if args.structured:
            from sparsepai.structured.prune import check_method

            check_method(args.method)
        make_config(get_method(args.method), {k: v for k, v in options.items()
                                              if k not in _GENERAL})
    except (TypeError, ValueError) as exc:
        raise common.UsageError(f"--option: {exc}" if options else str(exc)) from None


def run(args) -> int:
    from sparsepai.api import prune
    from sparsepai.experiments.data import loader
    from sparsepai.masks.io import save_masks

    options = check(args)
    model, (train_set, _, _) = common.model_and_data(args)
    batches = loader(train_set, args.batch_size, shuffle=True, seed=args.seed)
    t0 = time.perf_counter()
    masks = prune(model, args.method, args.sparsity, batches, structured=args.structured,
                  **options)
    save_masks(args.out, masks, model, meta=common.recorded_args(args))
    kept = sum(int(m.sum()) for m in masks.values())
    total = sum(m.numel() for m in masks.values())
    if not args.structured:
        print(f"{args.method}: kept {kept:,} of {total:,} prunable weights "
              f"({100 * kept / total:.2f}%) in {time.perf_counter() - t0:.1f} s -> {args.out}")
        return 0
    from sparsepai.structured.slim import save_slim, slim

    small = slim(model, masks)
    before = sum(p.numel() for p in model.parameters())
    after = sum(p.numel() for p in small.parameters())
    print(f"{args.method} (structured): kept {kept:,} of {total:,} channels of the pruned layers; "
          f"parameters {before:,} -> {after:,} ({100 * (1 - after / before):.1f}% fewer) in "
          f"{time.perf_counter() - t0:.1f} s -> {args.out}")
    if args.slim_out:
        save_slim(small, args.slim_out)
        print(f"slim model -> {args.slim_out} (sparsepai.structured.load_slim(path, model))")
    return 0
