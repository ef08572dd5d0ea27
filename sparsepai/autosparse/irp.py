"""Iterative rewind pruning (IRP), the data source of AutoSparse
(https://arxiv.org/abs/2408.14757, Section 3): train, prune a fraction of the remaining weights,
rewind the survivors to their initial values, repeat; a weight's survival score is the number of
rounds it survived.

Crash safety: the masks after every round go to their own file, written atomically (see
``sparsepai/_io.py``), and a round depends only on the initial state, the previous round's mask and seeds
derived from ``(seed, round, epoch)``. A run killed at any moment and started again with the same
arguments skips the finished rounds, redoes the interrupted one from its start and writes the
same bytes as an uninterrupted run (same machine, same thread count: float summation order).
The rounds run on the one iterative pruning engine (``sparsepai.core.iterative.prune_rounds``,
which lottery tickets use too) with a checkpointing observer; every epoch trains through the one
training loop (``sparsepai.core.train.train_pass``).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os

import torch
from tqdm.auto import tqdm

from sparsepai import _io
from sparsepai.autosparse.dataset import FORMAT, VERSION, IRPDataset, round_path
from sparsepai.core.iterative import prune_rounds
from sparsepai.core.loss import default_loss, loss_grads
from sparsepai.core.model import private_copy, reiterable
from sparsepai.core.prunable import prunable_names
from sparsepai.core.registry import get_method
from sparsepai.core.train import loader, train_pass
from sparsepai.masks.threshold import threshold
from sparsepai.optim import MaskedSGD

CRITERIA = ("magnitude", "snip")


@dataclasses.dataclass(frozen=True)
class IRPConfig:
    """Args:
        rounds: pruning rounds.
        epochs_per_round: training epochs before each pruning step.
        prune_fraction: fraction of the *remaining* weights pruned per round (the remaining count
            after round r is ``n_{r-1} - round(prune_fraction * n_{r-1})``; after R rounds about
            ``(1 - prune_fraction) ** R`` of the weights remain).
        criterion: ``"magnitude"`` (|w| after training) or ``"snip"`` (|dL/dw * w| at the
            trained weights over ``snip_batches`` batches, the paper's iterative-SNIP option).
        lr, momentum, weight_decay: the masked SGD of every round.
        batch_size: batch size when ``data`` is a Dataset.
        grad_batches: batches the initial gradient averages over (None: one full pass).
        snip_batches: batches of the SNIP criterion.
        seed: seeds data order and every other randomness of the training, per round and epoch.
    """

    rounds: int
    epochs_per_round: int
    prune_fraction: float
    criterion: str = "magnitude"
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 128
    grad_batches: int | None = None
    snip_batches: int = 1
    seed: int = 0

    def __post_init__(self):
        if self.rounds < 1 or self.epochs_per_round < 0:
            raise ValueError("irp: rounds must be >= 1 and epochs_per_round >= 0")
        if not 0 < self.prune_fraction < 1:
            raise ValueError(f"irp: prune_fraction must be in (0, 1), got {self.prune_fraction}")
        if self.criterion not in CRITERIA:
            raise ValueError(f"irp: criterion must be one of {CRITERIA}, got {self.criterion!r}")


def remaining_schedule(total: int, rounds: int, prune_fraction: float) -> list[int]:
    """Weights remaining after each round: ``prune_fraction`` of the remaining ones pruned per
    round (not ``sparsity ** 1 / rounds``, the precedence bug of the public code)."""
    out, n = [], total
    for _ in range(rounds):
        n = n - round(prune_fraction * n)
        out.append(n)
    return out


def _seed(*parts) -> int:
    """A 63-bit seed from (seed, round, epoch, ...): the same numbers in every process."""
    h = hashlib.sha256(json.dumps(parts).encode()).digest()
    return int.from_bytes(h[:8], "little") >> 1


def _is_dataset(data) -> bool:
    return (isinstance(data, torch.utils.data.Dataset)
            and not isinstance(data, torch.utils.data.DataLoader))


def _batches(data, cfg: IRPConfig, seed: int, shuffle: bool = True):
    """One epoch of batches, reproducible from ``seed``.

    A Dataset is batched with a loader seeded by ``seed``. Any other iterable is iterated as it
    is, after seeding torch's global RNG (a DataLoader without its own generator draws its
    shuffle from it) and reseeding a DataLoader's own generator if it has one."""
    torch.manual_seed(seed)
    if _is_dataset(data):
        return loader(data, cfg.batch_size, shuffle=shuffle, seed=seed)
    gen = getattr(data, "generator", None)
    if isinstance(gen, torch.Generator):
        gen.manual_seed(seed)
    return data


def _sha256(tensors) -> str:
    h = hashlib.sha256()
    for t in tensors:
        t = t.detach().cpu().contiguous().reshape(-1)
        h.update(str((t.dtype, t.numel())).encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def initial_grads(model, names, data, loss_fn, max_batches=None) -> tuple[dict, int]:
    """Gradient of the mean loss over the data (every sample weighted equally) for the named
    weights, with the model in **train mode** (batch statistics for norm layers) on a private
    copy, so the caller's weights, buffers and mode are untouched.

    Args:
        model: the network at initialization. names: prunable weight names.
        data: iterable of ``(inputs, targets)``. loss_fn: mean-reduced loss.
        max_batches: stop after this many batches (None: the whole iterable).

    Returns:
        ``({name: gradient}, samples)``; gradients shaped like their weights.
    """
    # frozen weights get gradients too; under sp.prune(..., group=) they are averaged
    work = private_copy(model, names).train()
    params = dict(work.named_parameters())
    total = {n: torch.zeros_like(params[n]) for n in names}
    count = 0
    for i, (x, y) in enumerate(data):
        if max_batches is not None and i >= max_batches:
            break
        gs = loss_grads(work, [params[n] for n in names], (x, y), loss_fn, "initial gradients")
        for n, g in zip(names, gs):
            total[n] += g * len(y)
        count += len(y)
    if count == 0:
        raise ValueError("initial gradients: data yielded no batches")
    return {n: t / count for n, t in total.items()}, count


def _fingerprint(model, names, data, cfg, loss_fn) -> dict:
    state = model.state_dict()
    first = next(iter(_batches(data, cfg, _seed(cfg.seed, "grad"), shuffle=False)), None)
    if first is None:
        raise ValueError("irp: data yielded no batches")
    modules = dict(model.named_modules())
    return {
        "names": names,
        "shapes": {n: list(state[n].shape) for n in names},
        "layer_types": {n: type(modules[n.rpartition(".")[0]]).__name__ for n in names},
        "model_sha256": _sha256(state[k] for k in sorted(state)),
        "model_class": type(model).__qualname__,
        "first_batch_sha256": _sha256(first),
        "loss_fn": getattr(loss_fn, "__qualname__", type(loss_fn).__qualname__),
    }


def _open_run(directory: str, run: dict, resume: bool) -> None:
    """Check that ``directory`` is empty or holds this very run; never overwrite another's."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, "run.json")
    run = json.loads(json.dumps(run))  # tuples -> lists, as on disk
    if os.path.exists(path):
        try:
            with open(path) as f:
                existing = json.load(f)
        except (OSError, json.JSONDecodeError, RecursionError) as e:
            raise ValueError(f"{path}: unreadable ({e}); not touching {directory}") from None
        if existing != run:
            diff = _diff(existing, run)
            raise ValueError(f"irp: {directory} holds another run's files (differs in "
                             f"{', '.join(diff[:6])}); nothing was changed: use another "
                             "checkpoint_dir or the original arguments and model")
        if not resume:
            raise FileExistsError(f"irp: {directory} already holds this run; pass resume=True "
                                  "to continue it, or choose an empty checkpoint_dir")
    else:
        others = [f for f in os.listdir(directory) if not _io.is_tmp_name(f)]
        if others:
            raise ValueError(f"irp: {directory} holds files that are not an IRP run "
                             f"({sorted(others)[:5]}); nothing was changed: use an empty "
                             "checkpoint_dir")
    _io.remove_stale_tmp(directory)
    if not os.path.exists(path):
        _io.atomic_write_json(path, run)


def _diff(a, b, prefix="") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            if a.get(k) != b.get(k):
                out += _diff(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [prefix.rstrip(".") or "<root>"]


def _train_round(work, init, mask, data, loss_fn, cfg: IRPConfig, r: int, progress: bool) -> list:
    work.load_state_dict(init)  # rewind: weights and buffers to iteration 0
    opt = MaskedSGD(work.named_parameters(), mask, lr=cfg.lr, momentum=cfg.momentum,
                    weight_decay=cfg.weight_decay)
    work.train()
    return [train_pass(work, opt, _batches(data, cfg, _seed(cfg.seed, r, e)), loss_fn,
                       f"irp round {r} epoch {e}").mean_loss
            for e in tqdm(range(cfg.epochs_per_round), desc=f"round {r} epochs", leave=False,
                          disable=not progress)]


def _criterion(work, names, mask, data, loss_fn, cfg: IRPConfig, r: int) -> dict:
    # the registered method's scores, on the weights trained this round
    method = get_method(cfg.criterion)
    if cfg.criterion == "magnitude":
        batches, options = None, {}
    else:
        batches = []
        for i, b in enumerate(_batches(data, cfg, _seed(cfg.seed, r, "snip"))):
            if i >= cfg.snip_batches:
                break
            batches.append(b)
        options = {"batches": len(batches)}
    raw = method.scores(method.saliency(work, names, batches, loss_fn,
                                        method.config(**options)))
    # pruned weights stay pruned: below every remaining score (scores are >= 0)
    return {n: torch.where(mask[n], torch.nan_to_num(raw[n].float(), nan=0.0), -1.0)
            for n in names}


def irp(model: torch.nn.Module, data, *, rounds: int, epochs_per_round: int,
        prune_fraction: float, checkpoint_dir: str, resume: bool = True,
        criterion: str = "magnitude", lr: float = 0.05, momentum: float = 0.9,
        weight_decay: float = 5e-4, batch_size: int = 128, grad_batches: int | None = None,
        snip_batches: int = 1, seed: int = 0, loss_fn=None, prunable=None,
        progress: bool = True) -> IRPDataset:
    """Iterative rewind pruning of ``model`` from its current (initial) weights.

    Every round: rewind the model (weights and buffers) to the initial state with the current
    mask, train ``epochs_per_round`` epochs with masked SGD (train mode), prune
    ``prune_fraction`` of the remaining weights by ``criterion`` (global threshold with
    ``sp.topk_mask``). A weight's survival score is the number of rounds after which it was still
    kept (0..rounds). Before the first round, the initial gradient (mean loss over the data, train
    mode, see :func:`initial_grads`) is recorded. The caller's model and global RNG state are left
    as they were.

    Args:
        model: the network at initialization (not modified).
        data: a ``torch.utils.data.Dataset`` of ``(input, target)`` (batched with
            ``batch_size``, shuffled per epoch from ``(seed, round, epoch)``) or an iterable of
            ``(inputs, targets)`` batches that yields the same batches whenever it is iterated
            after the same ``torch.manual_seed`` (a list, or a DataLoader).
        rounds: see :class:`IRPConfig`, as are ``epochs_per_round``, ``prune_fraction``,
            ``criterion``, ``lr``, ``momentum``, ``weight_decay``, ``batch_size``,
            ``grad_batches``, ``snip_batches`` and ``seed``.
        checkpoint_dir: the run's folder: empty (or missing) for a new run, or holding this
            run's checkpoint. A folder with another run's files is an error, never overwritten.
        resume: continue the run found in ``checkpoint_dir`` (False: refuse to touch a folder
            that already holds it).
        loss_fn: ``loss_fn(logits, targets)``, mean reduction; default cross-entropy (the
            logits as for ``sp.score``: the output, its ``logits`` or its first element).
        prunable: which weights (as for ``sp.score``); default every Conv/Linear weight.
        progress: tqdm bars over rounds and epochs.

    Returns:
        The :class:`IRPDataset` of the finished run (also on disk in ``checkpoint_dir``).
    """
    cfg = IRPConfig(rounds, epochs_per_round, prune_fraction, criterion, lr, momentum,
                    weight_decay, batch_size, grad_batches, snip_batches, seed)
    if loss_fn is not None and not callable(loss_fn):
        raise TypeError(f"irp: loss_fn must be callable as loss_fn(logits, targets), got "
                        f"{type(loss_fn).__name__} {loss_fn!r}")
    loss_fn = default_loss(loss_fn)
    names = prunable_names(model, prunable)
    data = reiterable(data)  # a generator: every pass (fingerprint, gradients, epochs) the same
    with torch.random.fork_rng(devices=[]):  # the caller's RNG state is restored afterwards
        fp = _fingerprint(model, names, data, cfg, loss_fn)
        run = {"format": FORMAT, "version": VERSION, "config": dataclasses.asdict(cfg),
               "fingerprint": fp}
        _open_run(checkpoint_dir, run, resume)
        if os.path.exists(os.path.join(checkpoint_dir, "dataset.json")):
            return IRPDataset.load(checkpoint_dir)
        return _run(model, names, data, loss_fn, cfg, checkpoint_dir, fp, progress,
                    run_sha256(run))


def run_sha256(run: dict) -> str:
    """The identity of a run (its ``run.json``: arguments and fingerprint), recorded in every
    file it writes, so a file copied in from another run is refused on resume."""
    return hashlib.sha256(json.dumps(run, sort_keys=True).encode()).hexdigest()


def _read_own(path: str, what: str, run_id: str) -> tuple[dict, dict]:
    """A checkpoint file of this run: ``(tensors, meta)``; one written by another run (or
    unreadable) is an error naming it."""
    tensors, meta = _io.read_tensors(path, what)
    if "run_sha256" not in meta:
        raise ValueError(f"{path}: records no run fingerprint (an older sparsepai's or another "
                         "tool's file); nothing was changed: remove it to redo it, or start "
                         "the run in an empty folder")
    if meta["run_sha256"] != run_id:
        raise ValueError(f"{path}: belongs to another IRP run (its run fingerprint differs from "
                         "this run's run.json); nothing was changed: remove the file to redo it")
    return tensors, meta


def _run(model, names, data, loss_fn, cfg, directory, fp, progress, run_id) -> IRPDataset:
    init = {k: v.detach().clone() for k, v in model.state_dict().items()}
    init_path = os.path.join(directory, "initial.safetensors")
    if os.path.exists(init_path):
        grad_samples = _read_own(init_path, "IRP initial state", run_id)[1]["grad_samples"]
    else:
        grads, grad_samples = initial_grads(
            model, names, _batches(data, cfg, _seed(cfg.seed, "grad"), shuffle=False), loss_fn,
            cfg.grad_batches)
        tensors = {f"state/{k}": v for k, v in init.items()}
        tensors.update({f"grad/{n}": g for n, g in grads.items()})
        _io.save_tensors(init_path, tensors, {"grad_samples": grad_samples, "run_sha256": run_id})
    os.makedirs(os.path.join(directory, "masks"), exist_ok=True)

    work = copy.deepcopy(model)
    mask = {n: torch.ones_like(init[n], dtype=torch.bool) for n in names}
    schedule = remaining_schedule(sum(init[n].numel() for n in names), cfg.rounds,
                                  cfg.prune_fraction)
    done = 0
    while done < cfg.rounds and os.path.exists(round_path(directory, done + 1)):
        mask = _read_own(round_path(directory, done + 1), "IRP round", run_id)[0]
        done += 1
    bar = tqdm(total=cfg.rounds, initial=done, desc="IRP rounds", disable=not progress)
    losses, previous = {}, [mask]

    def train_and_score(r, mask):  # rewind to iteration 0, train, score the trained weights
        losses[r] = _train_round(work, init, mask, data, loss_fn, cfg, r, progress)
        return _criterion(work, names, mask, data, loss_fn, cfg, r)

    def checkpoint(r, mask):  # the observer that makes IRP crash-safe: one file per round
        assert all(not bool((mask[n] & ~previous[0][n]).any()) for n in names)  # never revives
        previous[0] = mask
        _io.save_tensors(round_path(directory, r), mask,
                         {"round": r, "kept": schedule[r - 1], "train_loss": losses[r],
                          "run_sha256": run_id})
        bar.update()
        bar.set_postfix(kept=schedule[r - 1])

    def keep_best(scores, keep):  # one global ranking in the order of names
        return threshold({n: scores[n] for n in names}, keep)

    prune_rounds(schedule, train_and_score, keep_best, masks=mask, first=done + 1,
                 on_round=checkpoint)
    bar.close()
    _finish(directory, names, cfg, fp, schedule, grad_samples, run_id)
    return IRPDataset.load(directory)


def _finish(directory, names, cfg, fp, schedule, grad_samples, run_id):
    survival = None
    train_loss = []
    for r in range(1, cfg.rounds + 1):
        m, meta = _read_own(round_path(directory, r), "IRP round", run_id)
        train_loss.append(meta["train_loss"])
        if survival is None:
            survival = {n: torch.zeros(m[n].shape, dtype=torch.int32) for n in names}
        for n in names:
            survival[n] += m[n].to(torch.int32)
    _io.save_tensors(os.path.join(directory, "survival.safetensors"), survival,
                     {"rounds": cfg.rounds, "run_sha256": run_id})
    _io.atomic_write_json(os.path.join(directory, "dataset.json"), {
        "format": FORMAT, "version": VERSION, "rounds": cfg.rounds, "names": names,
        "shapes": fp["shapes"], "layer_types": fp["layer_types"], "config": dataclasses.asdict(cfg),
        "remaining_after_round": schedule, "train_loss_per_round": train_loss,
        "grad_mode": "train mode (batch statistics); gradient of the mean loss over "
                     f"{grad_samples} samples, data unshuffled",
        "grad_samples": grad_samples,
        "survival": "rounds after which the weight was still kept (0..rounds)",
    })
