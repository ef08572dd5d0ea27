"""``sparsepai train``: train a model (masked, slim, or dense) and report its test accuracy."""

from __future__ import annotations

from sparsepai.cli import common

HELP = "train a (masked) model and report test accuracy"
DESCRIPTION = ("Train with the pruned weights held at zero (element masks), or the physically "
               "smaller model (channel masks).")


def add_arguments(p) -> None:
    common.add_model_data(p)
    common.add_train(p)
    p.add_argument("--masks", default=None, help="masks file from 'sparsepai prune'")
    p.add_argument("--out", default=None, help="write the results (JSON) here")


def run(args) -> int:
    from sparsepai import _io
    from sparsepai.masks.io import read_masks
    from sparsepai.experiments.train import train

    common.check_model_data(args)
    cfg = common.train_config(args)
    if args.masks:
        common.check_input_file(args.masks, "--masks")
    if args.out:
        common.check_out(args.out)
    common.check_distinct([("--masks", args.masks)], [("--out", args.out)])
    model, (train_set, test_set, _) = common.model_and_data(args)
    masks, meta = read_masks(args.masks, model) if args.masks else (None, {})
    if meta.get("structured"):
        from sparsepai.structured.slim import slim

        # channel masks: train the physically smaller model, nothing to mask
        model, masks = slim(model, masks), None
        print(f"training the slim model: {sum(p.numel() for p in model.parameters()):,} "
              "parameters")
    res = train(model, masks, train_set, test_set, cfg)
    print(f"test accuracy {100 * res['test_acc']:.2f}%")
    if args.out:
        _io.atomic_write_json(args.out, {"config": common.recorded_args(args), **res})
    return 0
