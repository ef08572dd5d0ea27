"""What the commands share: argument groups and types, and the checks every command runs
before any expensive work (bad arguments raise :class:`UsageError`, exit status 2)."""

from __future__ import annotations

import argparse
import os

# datasets read from --data-root (digits is embedded); cifar can download into it instead
_NEEDS_ROOT = ("mnist", "cifar10", "cifar100", "tinyimagenet")
_DOWNLOADABLE = ("cifar10", "cifar100")


class UsageError(ValueError):
    """A bad argument, found before any work: one line on stderr, exit status 2."""


# -- argument types: argparse turns their errors into "argument --x: message", exit 2 ---------

def sparsity(text: str) -> float:
    v = float(text)
    if not 0 <= v < 1:
        raise argparse.ArgumentTypeError(f"sparsity must be in [0, 1), got {v}")
    return v


def open_fraction(text: str) -> float:
    v = float(text)
    if not 0 < v < 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1), got {v}")
    return v


def positive_int(text: str) -> int:
    v = int(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {v}")
    return v


def option_value(text: str):
    """``"3"`` -> 3, ``"0.5"`` -> 0.5, ``"true"`` -> True; anything else stays a string."""
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def method_options(pairs) -> dict:
    """``["meta_steps=3", ...]`` (repeated ``--option``) -> ``{"meta_steps": 3, ...}``."""
    out = {}
    for p in pairs or []:
        if "=" not in p:
            raise UsageError(f"--option takes key=value, got {p!r}")
        k, v = p.split("=", 1)
        out[k.replace("-", "_")] = option_value(v)
    return out


# -- argument groups ---------------------------------------------------------------------------

def add_model_data(p, model: str = "smallconv", dataset: str = "digits") -> None:
    p.add_argument("--model", default=model, help=f"architecture (default: {model}); see "
                   "sparsepai.experiments.models.NAMES")
    p.add_argument("--dataset", default=dataset,
                   help=f"digits, mnist, cifar10, cifar100, tinyimagenet (default: {dataset})")
    p.add_argument("--data-root", default=None, help="folder holding the dataset's files")
    p.add_argument("--download", action="store_true", help="let torchvision download the data")
    p.add_argument("--seed", type=int, default=0, help="initialization and data-order seed")


def add_train(p, epochs: int = 15, lr: float = 0.05, batch_size: int = 64) -> None:
    p.add_argument("--epochs", type=positive_int, default=epochs,
                   help=f"training epochs, >= 1 ({epochs})")
    p.add_argument("--batch-size", type=positive_int, default=batch_size,
                   help=f"batch size ({batch_size})")
    p.add_argument("--optimizer", default="sgd", choices=["sgd", "adamw"], help="(sgd)")
    p.add_argument("--lr", type=float, default=lr, help=f"learning rate ({lr})")
    p.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (0.9)")
    p.add_argument("--weight-decay", type=float, default=5e-4, help="weight decay (5e-4)")


def train_config(args):
    """The :class:`~sparsepai.experiments.train.TrainConfig` of ``add_train``'s arguments."""
    from sparsepai.experiments.train import TrainConfig

    try:
        return TrainConfig(epochs=args.epochs, batch_size=args.batch_size,
                           optimizer=args.optimizer, lr=args.lr, momentum=args.momentum,
                           weight_decay=args.weight_decay, seed=args.seed)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


# -- checks before work ------------------------------------------------------------------------

def check_model_data(args) -> None:
    """Model and dataset names known, and the data root (if needed) an existing folder."""
    from sparsepai.experiments.data import NAMES as DATASETS
    from sparsepai.experiments.models import NAMES as MODELS

    if args.model not in MODELS:
        raise UsageError(f"unknown model {args.model!r}; valid models: {', '.join(MODELS)}")
    if args.dataset not in DATASETS:
        raise UsageError(f"unknown dataset {args.dataset!r}; valid datasets: "
                         f"{', '.join(DATASETS)}")
    root = args.data_root
    if root is not None and not os.path.isdir(root):
        if not (args.download and args.dataset in _DOWNLOADABLE):
            raise UsageError(f"--data-root {root}: no such folder")
    if root is None and args.dataset in _NEEDS_ROOT:
        raise UsageError(f"--dataset {args.dataset} needs --data-root (the folder holding its "
                         "files)")


def check_out(path: str, flag: str = "--out", *, folder: bool = False) -> None:
    """``path`` can be written (a file, or with ``folder=True`` a folder)."""
    from sparsepai import _io

    try:
        _io.check_writable(path, folder=folder)
    except ValueError as exc:
        raise UsageError(f"{flag} {exc}") from None


def _same(a: str, b: str) -> bool:
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)  # hard links: one inode under two names
    except OSError:
        return False


def check_distinct(inputs=(), outputs=()) -> None:
    """Refuse, before any work, an output that would destroy an input or another output.

    Args:
        inputs: ``[(flag, path or None)]``: files read, or folders read as a whole (IRP runs):
            an output inside such a folder is refused too.
        outputs: ``[(flag, path or None)]``: files or folders written.

    Raises:
        UsageError: naming both flags and the path (compared as resolved paths and inodes, so
            symbolic and hard links count as the same file).
    """
    inputs = [(f, p) for f, p in inputs if p]
    outputs = [(f, p) for f, p in outputs if p]
    for i, (flag, out) in enumerate(outputs):
        for other_flag, other in outputs[:i]:
            if _same(out, other):
                raise UsageError(f"{flag} {out}: is also {other_flag}; each output needs its "
                                 "own path")
        for in_flag, src in inputs:
            if _same(out, src):
                raise UsageError(f"{flag} {out}: is also the input {in_flag}; writing it would "
                                 "destroy the input: choose another path")
            if os.path.isdir(src) and os.path.realpath(out).startswith(
                    os.path.join(os.path.realpath(src), "")):
                raise UsageError(f"{flag} {out}: lies inside the input folder {in_flag} {src}; "
                                 "choose a path outside it")


def check_input_file(path: str, flag: str) -> None:
    if not os.path.isfile(path):
        raise UsageError(f"{flag} {path}: no such file")


def model_and_data(args):
    """A freshly initialized ``args.model`` (seeded by ``args.seed``) and ``(train, test,
    info)`` of ``args.dataset``."""
    import torch

    from sparsepai.experiments.data import load_dataset
    from sparsepai.experiments.models import get_model

    data = load_dataset(args.dataset, args.data_root, download=args.download, seed=0)
    info = data[2]
    torch.manual_seed(args.seed)
    model = get_model(args.model, info.num_classes, info.in_channels, info.image_size)
    return model, data


def recorded_args(args) -> dict:
    """The command's arguments, as recorded in the files it writes."""
    return {k: v for k, v in vars(args).items() if k not in ("run", "debug")}
