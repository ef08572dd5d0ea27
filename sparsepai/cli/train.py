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
    p.add_argument("--sparse-kernels", action="store_true",
                   help="run the masked Conv2d/Linear layers on the unstructured-sparse CPU "
                        "kernels where forward + backward measures faster on the first batch "
                        "(sp.sparsify; element masks only); prints which layers and why")
    p.add_argument("--out", default=None, help="write the results (JSON) here")


def run(args) -> int:
    from sparsepai import _io
    from sparsepai.masks.io import read_masks
    from sparsepai.experiments.train import train

    common.check_model_data(args)
    cfg = common.train_config(args)
    if args.sparse_kernels:
        import dataclasses

        cfg = dataclasses.replace(cfg, sparse_kernels=True)
    if args.masks:
        common.check_input_file(args.masks, "--masks")
    elif args.sparse_kernels:
        raise common.UsageError("--sparse-kernels needs --masks (element masks)")
    if args.out:
        common.check_out(args.out)
    common.check_distinct([("--masks", args.masks)], [("--out", args.out)])
    model, (train_set, test_set, _) = common.model_and_data(args)
    masks, meta = read_masks(args.masks, model) if args.masks else (None, {})
    if meta.get("structured") and args.sparse_kernels:
        raise common.UsageError("--sparse-kernels needs element masks; channel masks train the "
                                "slim model instead")
    if meta.get("structured"):
        from sparsepai.structured.slim import slim

        # channel masks: train the physically smaller model, nothing to mask
        model, masks = slim(model, masks), None
        print(f"training the slim model: {sum(p.numel() for p in model.parameters()):,} "
              "parameters")
    res = train(model, masks, train_set, test_set, cfg)
    report = getattr(model, "sparsepai_sparsify_report", None)
    if report is not None:
        import dataclasses

        from sparsepai.sparse.sparsify import format_report

        print("sparse kernels:\n" + format_report(report))
        res["sparse_kernels"] = [dataclasses.asdict(e) for e in report]
    print(f"test accuracy {100 * res['test_acc']:.2f}%")
    if args.out:
        _io.atomic_write_json(args.out, {"config": common.recorded_args(args), **res})
    return 0
