"""Sweeps: every method at several sparsities and seeds, pruned, trained, evaluated.

A sweep plans its runs from its :class:`SweepConfig`, appends each finished run to
``runs.jsonl`` (a killed sweep resumes where it stopped, but only with identical settings: a
folder holding a sweep of another configuration is refused), then writes the report
(:mod:`sparsepai.experiments.report`)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time

import torch
from tqdm.auto import tqdm

from sparsepai import _io
from sparsepai.api import prune, score
from sparsepai.core.registry import get_method
from sparsepai.experiments.data import NAMES as DATASETS
from sparsepai.experiments.data import load_dataset, loader
from sparsepai.experiments.models import NAMES as MODELS
from sparsepai.experiments.models import get_model
from sparsepai.experiments.report import (AFTER_TRAINING, labels, resolve, row_labels,  # noqa: F401
                                          split_ablation, write_summary)
from sparsepai.experiments.train import TrainConfig, train
from sparsepai.pruning import prune_after_training

ALL_METHODS = ("random", "magnitude", "snip", "grasp", "synflow", "force", "prospr")
# baselines that train first: one train-prune-rewind run per seed serves every sparsity


@dataclasses.dataclass(frozen=True)
class SweepConfig:
    """A sweep's whole configuration (written beside its results).

    ``methods`` are labels: a method name, or a label defined in ``method_options`` as
    ``(label, method, {option: value})`` (e.g. ``("lottery_k25", "lottery",
    {"rewind_iteration": 25})``), so one method can appear with several settings.
    ``ablations``: sanity checks (``sparsepai.masks.ablate``) run beside every method pruned at
    initialisation, as labels ``"<label>+shuffle"`` (kept positions shuffled within each
    layer), ``"<label>+reinit"`` (the same masks on weights drawn afresh from the model's own
    init) and ``"<label>+invert"`` (the lowest scores kept at the same per-layer counts).
    """

    model: str = "smallconv"
    dataset: str = "digits"
    data_root: str | None = None
    methods: tuple = ALL_METHODS
    sparsities: tuple = (0.9, 0.95, 0.98, 0.99)
    seeds: tuple = (0, 1)
    prune_batch_size: int = 128
    dense_baseline: bool = True
    train: TrainConfig = TrainConfig(epochs=15, batch_size=64, lr=0.05)
    method_options: tuple = ()
    ablations: tuple = ()


# a re-initialised model draws its weights with the run's seed plus this (not the same weights)
REINIT_SEED_OFFSET = 10_000


CONFIG_FILE, LOG_FILE = "config.json", "runs.jsonl"
# held (flock) by the process writing the folder; the kernel releases it if that process dies
LOCK_FILE = ".sparsepai-sweep.lock"





def check_config(cfg: SweepConfig) -> None:
    """Check a sweep's settings before any work.

    Raises:
        ValueError: an unknown model, dataset or method (naming it and the valid ones), no
            sparsities or seeds, or a sparsity outside ``[0, 1)``.
    """
    if cfg.model not in MODELS:
        raise ValueError(f"sweep: unknown model {cfg.model!r}; valid models: {', '.join(MODELS)}")
    if cfg.dataset not in DATASETS:
        raise ValueError(f"sweep: unknown dataset {cfg.dataset!r}; valid datasets: "
                         f"{', '.join(DATASETS)}")
    for label, method, _ in labels(cfg):
        if method != "dense":
            try:
                get_method(method)
            except ValueError as exc:
                raise ValueError(f"sweep: label {label!r}: {exc}" if label != method else
                                 f"sweep: {exc}") from None
    from sparsepai.masks.ablate import ABLATIONS

    bad = [a for a in cfg.ablations if a not in ABLATIONS]
    if bad or len(set(cfg.ablations)) != len(cfg.ablations):
        raise ValueError(f"sweep: ablations must be distinct names of {', '.join(ABLATIONS)}, "
                         f"got {list(cfg.ablations)}")
    if not cfg.methods and not cfg.dense_baseline:
        raise ValueError("sweep: nothing to run (no methods, no dense baseline)")
    if not cfg.sparsities or not cfg.seeds:
        raise ValueError("sweep: needs at least one sparsity and one seed")
    bad = [s for s in cfg.sparsities if not 0 <= s < 1]
    if bad:
        raise ValueError(f"sweep: sparsities must be in [0, 1), got {bad}")
    for what, values in (("methods", cfg.methods), ("sparsities", cfg.sparsities),
                         ("seeds", cfg.seeds)):
        twice = sorted({v for v in values if list(values).count(v) > 1}, key=str)
        if twice:  # a repeated run would be trained twice and counted twice in the means
            raise ValueError(f"sweep: {what} repeat {twice}; give each once")


def _as_json(cfg: SweepConfig) -> dict:
    out = json.loads(json.dumps(dataclasses.asdict(cfg)))  # tuples -> lists, as on disk
    if not cfg.ablations:  # folders written before ablations existed stay resumable
        del out["ablations"]
    return out


def check_out_dir(cfg: SweepConfig, out_dir: str) -> None:
    """Check that ``out_dir`` can hold this sweep: absent, empty, or holding a sweep with
    identical settings (which is then resumed). Nothing is written.

    Raises:
        ValueError: ``out_dir`` is not a writable folder, holds a sweep of other settings (the
            message names the settings that differ), runs without a config, or files that are
            not a sweep's (a user's ``results.csv`` is never overwritten).
    """
    _io.check_writable(out_dir, folder=True)
    path = os.path.join(out_dir, CONFIG_FILE)
    if not os.path.exists(path):
        if os.path.exists(os.path.join(out_dir, LOG_FILE)):
            raise ValueError(f"{out_dir}: holds {LOG_FILE} but no {CONFIG_FILE}: cannot tell "
                             "which settings its runs used; use another folder")
        others = sorted(f for f in (os.listdir(out_dir) if os.path.isdir(out_dir) else ())
                        if f != LOCK_FILE and not _io.is_tmp_name(f))
        if others:
            raise ValueError(f"{out_dir}: holds files that are not a sweep's ({others[:5]}); "
                             "nothing was changed: use an empty or new --out folder")
        return
    try:
        with open(path) as f:
            old = json.load(f)
    except (OSError, json.JSONDecodeError, RecursionError) as exc:
        raise ValueError(f"{path}: unreadable sweep config ({exc}); use another folder") from None
    new = _as_json(cfg)
    if isinstance(old, dict) and old.get("ablations") == []:
        del old["ablations"]  # no ablations, written either way
    if isinstance(old, dict):
        _fill_added_defaults(old, new, cfg)
    if old != new:
        diff = _differences(old, new)
        raise ValueError(f"{out_dir}: holds a sweep with other settings ({'; '.join(diff[:4])}); "
                         "use another --out folder, or remove this one to start over")


_HELD: dict = {}  # resolved folder -> [lock fd, depth] of the locks this process holds


@contextlib.contextmanager
def out_dir_lock(out_dir: str):
    """Hold ``out_dir`` for one sweep (or demo) at a time: a second process is refused.

    The lock is ``flock`` on ``out_dir/.sparsepai-sweep.lock`` (holding the holder's pid, for
    the message), so a holder that dies releases it and never blocks a later run; the file is
    removed on exit. Nested use in one process (the demo around its sweep) is allowed.

    Raises:
        ValueError: another process holds the folder (one line, naming the folder and pid).
    """
    import fcntl

    key = os.path.realpath(out_dir)
    if key in _HELD:
        _HELD[key][1] += 1
        try:
            yield
        finally:
            _HELD[key][1] -= 1
        return
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, LOCK_FILE)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise ValueError(f"{out_dir}: another sweep (process {holder}) is writing this "
                             "folder; wait for it to finish or use another --out") from None
        try:  # the holder may have removed the file between our open and flock: retry
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    _HELD[key] = [fd, 1]
    try:
        yield
    finally:
        del _HELD[key]
        try:
            os.unlink(path)  # before the unlock: a waiter then finds no file or a new one
        finally:
            os.close(fd)


def _fill_added_defaults(old: dict, new: dict, cfg) -> None:
    """Settings added to the config after ``old`` was written ran as their defaults: a field
    absent from ``old`` takes the value ``new`` has when that value is the field's default
    (e.g. ``train.sparse_kernels=False``), so such folders still resume."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value) and isinstance(old.get(f.name), dict) \
                and isinstance(new.get(f.name), dict):
            _fill_added_defaults(old[f.name], new[f.name], value)
        elif f.name not in old and f.name in new and f.default is not dataclasses.MISSING \
                and value == f.default:
            old[f.name] = new[f.name]


def _differences(old, new, prefix="") -> list:
    if not (isinstance(old, dict) and isinstance(new, dict)):
        return [f"{prefix.rstrip('.') or 'config'}: {old!r} there, {new!r} now"]
    out = []
    for key in sorted(set(old) | set(new), key=str):
        a, b = old.get(key, "<unset>"), new.get(key, "<unset>")
        if a != b:
            out += _differences(a, b, f"{prefix}{key}.") if isinstance(a, dict) else \
                [f"{prefix}{key}: {a!r} there, {b!r} now"]
    return out


def append_row(path: str, row: dict) -> None:
    """Append one result row to a runs.jsonl, durably.

    A line cut by a crash mid-write has no newline; the row goes on a line of its own after it
    (load_rows skips the cut line), instead of being glued to it and lost.
    """
    with open(path, "ab+") as f:
        head = b""
        if f.tell() > 0:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                head = b"\n"
        f.write(head + (json.dumps(row) + "\n").encode())
        f.flush()
        os.fsync(f.fileno())


def load_rows(path):
    """The result rows of a runs.jsonl (a line cut by a crash is skipped)."""
    if not os.path.exists(path):
        return []
    rows = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:  # a line cut by a crash: that run reruns
                    pass
    return rows


def run_one(cfg: SweepConfig, label: str, sparsity: float, seed: int, data, progress=False,
            tickets: dict | None = None):
    """Prune (``label`` at ``sparsity``), train and evaluate one model.

    Args:
        cfg, data: the sweep's config and ``(train, test, info)``.
        label: a method label (see :class:`SweepConfig`), or ``"dense"``.
        tickets: a cache ``{(label, seed): (Tickets, seconds)}`` for the after-training methods:
            their one run per seed (at every ``cfg.sparsities``) is made once and reused.

    Returns:
        The result row. For after-training methods the model trains from the ticket's rewind
        weights and ``prune_seconds`` is the whole shared run.
    """
    train_set, test_set, info = data
    label, ablation = split_ablation(label)
    method, options = resolve(cfg, label)
    torch.manual_seed(seed)
    model = get_model(cfg.model, info.num_classes, info.in_channels, info.image_size)
    t0 = time.perf_counter()
    masks, extra = None, {}
    batches = loader(train_set, cfg.prune_batch_size, shuffle=True, seed=seed)
    if method in AFTER_TRAINING:
        tickets = {} if tickets is None else tickets
        if (label, seed) not in tickets:
            # every sparsity of the sweep, so a resumed sweep takes the same lottery path
            found = prune_after_training(model, method, cfg.sparsities, batches, **options)
            tickets[(label, seed)] = (found, time.perf_counter() - t0)
        found, prune_s = tickets[(label, seed)]
        model.load_state_dict(found.state)
        masks = found.masks[sparsity]
        extra = {"rounds": found.rounds}
    else:
        if method != "dense":
            masks = prune(model, method, sparsity, batches, **options)
        prune_s = time.perf_counter() - t0
        if ablation:
            masks = _ablate(cfg, model, masks, ablation, method, options, seed, data)
            extra = {"ablation": ablation}
    result = train(model, masks, train_set, test_set,
                   dataclasses.replace(cfg.train, seed=seed), progress=progress)
    kept = sum(int(m.sum()) for m in masks.values()) if masks else None
    total = sum(int(m.numel()) for m in masks.values()) if masks else None
    return {"method": label + (f"+{ablation}" if ablation else ""), "sparsity": sparsity,
            "seed": seed, "test_acc": result["test_acc"],
            "prune_seconds": prune_s, "kept": kept, "prunable": total,
            "train_loss": result["train_loss"][-1] if result["train_loss"] else None, **extra}


def _ablate(cfg: SweepConfig, model, masks, ablation, method, options, seed, data):
    """The ablated masks (``reinit``: the model's weights redrawn in place)."""
    from sparsepai.masks.ablate import invert_masks, reinit_, shuffle_masks

    train_set, _, info = data
    if ablation == "shuffle":
        return shuffle_masks(masks, seed=seed)
    if ablation == "invert":  # the same scores again (same model and batches), lowest kept
        opts = {k: v for k, v in options.items() if k not in ("scope", "min_per_layer")}
        batches = loader(train_set, cfg.prune_batch_size, shuffle=True, seed=seed)
        return invert_masks(score(model, method, batches, **opts), masks)

    def own_init(m):  # the architecture's own initialisation, drawn under reinit_'s seed
        m.load_state_dict(get_model(cfg.model, info.num_classes, info.in_channels,
                                    info.image_size).state_dict())

    reinit_(model, seed=seed + REINIT_SEED_OFFSET, init=own_init)
    return masks


def run_sweep(cfg: SweepConfig, out_dir: str, progress: bool = True,
              command: str | None = None) -> list:
    """Run (or resume) a sweep into ``out_dir``.

    Args:
        cfg: the sweep.
        out_dir: results folder: new, empty, or holding a sweep with identical settings, which
            is resumed (its finished runs are kept, the others run).
        progress: show a progress bar.
        command: the command line that ran it, recorded in results.json.

    Returns:
        All result rows, old and new.

    Raises:
        ValueError: from :func:`check_config` or :func:`check_out_dir`, or another process is
            writing ``out_dir`` (:func:`out_dir_lock`), before any work.
    """
    check_config(cfg)
    check_out_dir(cfg, out_dir)
    with out_dir_lock(out_dir):
        check_out_dir(cfg, out_dir)  # again, now that no other process writes it
        return _run_sweep(cfg, out_dir, progress, command)


def _run_sweep(cfg: SweepConfig, out_dir: str, progress: bool, command: str | None) -> list:
    _io.atomic_write_json(os.path.join(out_dir, CONFIG_FILE), _as_json(cfg))
    log = os.path.join(out_dir, LOG_FILE)
    rows = load_rows(log)
    done = {(r["method"], r["sparsity"], r["seed"]) for r in rows}
    plan = [("dense", 0.0, s) for s in cfg.seeds] if cfg.dense_baseline else []
    plan += [(m, sp_, s) for s in cfg.seeds for sp_ in cfg.sparsities for m in row_labels(cfg)]
    todo = [p for p in plan if p not in done]
    data = load_dataset(cfg.dataset, cfg.data_root, seed=0)
    bar = tqdm(todo, desc=f"{cfg.model}/{cfg.dataset} sweep", disable=not progress)
    tickets = {}
    for method, sparsity, seed in bar:
        bar.set_postfix_str(f"{method} {sparsity:.3g} seed {seed}")
        row = run_one(cfg, method, sparsity, seed, data, tickets=tickets)
        rows.append(row)
        append_row(log, row)
    write_summary(rows, cfg, out_dir, command)
    return rows


