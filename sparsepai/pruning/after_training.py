"""Baselines that look at trained weights, for the comparison tables: magnitude after training
(train densely, keep the largest trained weights, rewind) and lottery-ticket rewinding (Frankle &
Carbin, ICLR 2019, https://arxiv.org/abs/1803.03635; Frankle et al., ICML 2020, "Linear mode
connectivity and the lottery ticket hypothesis", https://arxiv.org/abs/1912.05671): train, prune
``rate`` of the remaining weights by trained magnitude, rewind the survivors, repeat until the
target.

Rewinding goes to the weights after ``rewind_iteration`` = k optimizer steps of the first (dense)
training run: k = 0 is the initialization (Frankle & Carbin), k > 0 an early iteration (Frankle
et al. 2020). The state at step k (every parameter and buffer) is recorded during the first
run; every later round loads it, applies the masks and trains the remaining iterations, k to the
end of ``epochs`` passes over ``data`` (the first k batches are skipped), as the paper resumes
training at iteration k. The optimizer restarts at each rewind (momentum zero; the paper's
rewinding restores weights only).

``sp.prune(model, "lottery", s, data, ...)`` returns the masks only. The ticket is the masks
*and* the rewind weights: :func:`prune_after_training` returns both, and the masks at several
sparsities from one train-prune-rewind run. Training uses ``data`` (one pass per epoch) and
``loss_fn``, with SGD that keeps pruned weights at zero.
"""

from __future__ import annotations

import dataclasses

import torch
from tqdm.auto import tqdm

from sparsepai.core.iterative import prune_rounds
from sparsepai.core.loss import default_loss
from sparsepai.core.model import private_copy, reiterable
from sparsepai.core.options import check_sparsity, make_config, option
from sparsepai.core.prunable import keep_count, prunable_names
from sparsepai.core.registry import get_method, register
from sparsepai.core.train import train_pass
from sparsepai.masks.threshold import threshold
from sparsepai.optim import MaskedSGD

METHODS = ("lottery", "magnitude_after_training")


@dataclasses.dataclass(frozen=True)
class AfterTrainingConfig:
    """Args: epochs: training epochs per round; lr, momentum, weight_decay: the SGD;
    rate: fraction of the remaining weights pruned per round (lottery tickets; 0.2 in the
    papers); rewind_iteration: the optimizer step whose weights the survivors are rewound to
    (0 = initialization)."""

    epochs: int = option(5, at_least=1)
    lr: float = option(0.05, above=0)
    momentum: float = option(0.9, at_least=0)
    weight_decay: float = option(5e-4, at_least=0)
    rate: float = option(0.2, above=0, below=1)
    rewind_iteration: int = option(0, at_least=0)


@dataclasses.dataclass(frozen=True)
class Tickets:
    """What one train-prune-rewind run found.

    Args:
        masks: ``{sparsity: {param name: bool mask}}`` for every requested sparsity (True =
            kept; exactly ``N - round(sparsity * N)`` of the N prunable weights kept).
        state: the model's ``state_dict()`` to rewind to: every parameter and buffer after
            ``rewind_iteration`` optimizer steps of the first (dense) training run (the initial
            state for 0, or when nothing was pruned and no round ran). Not masked: load it, then
            ``sp.apply_masks`` zeroes the pruned weights.
        rounds: train-prune rounds run (one for magnitude after training).
        rewind_iteration: k, as configured.
    """

    masks: dict
    state: dict
    rounds: int
    rewind_iteration: int


def _snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _train(model, masks, data, loss_fn, cfg, what, start=0, record_at=None):
    """Train ``model`` in place for ``cfg.epochs`` passes over ``data``, skipping the first
    ``start`` iterations (a run resumed from a rewind point).

    Returns:
        ``(params, state)``: the trained parameters by name, and the state dict after
        ``record_at`` optimizer steps (None when ``record_at`` is None).
    """
    params = dict(model.named_parameters())
    opt = MaskedSGD(model.named_parameters(), masks or {}, lr=cfg.lr, momentum=cfg.momentum,
                    weight_decay=cfg.weight_decay)
    model.train()
    step, recorded = 0, []

    def record(i, base):  # the state after record_at optimizer steps, skipped ones counted
        if base + i == record_at:
            recorded.append(_snapshot(model))

    for _ in range(cfg.epochs):
        step += train_pass(model, opt, data, loss_fn, what, skip=max(0, start - step),
                           before_batch=lambda i, base=step: record(i, base)).batches
    state = recorded[0] if recorded else None
    if record_at is not None and state is None:
        # rewinding to the end of training would leave nothing to train
        raise ValueError(f"rewind_iteration={record_at} is not before the end of the first "
                         f"training run ({step} iterations)")
    return params, state


def lottery_counts(total: int, keeps, rate: float) -> list[int]:
    """Kept counts after each lottery round: ``rate`` of the remaining weights pruned per round
    (at least one), never passing the next requested count (a round stops there exactly), so one
    run passes through every count in ``keeps``."""
    out, current = [], total
    for keep in sorted(set(keeps), reverse=True):
        while current > keep:
            current = max(keep, min(current - 1, int(round(current * (1 - rate)))))
            out.append(current)
    return out


class LotteryRounds:
    """Lottery-ticket rounds (:class:`~sparsepai.core.iterative.Rounds`): each round trains
    the rewound model under the previous round's masks (the first trains it dense and records
    the rewind state), returns the trained weights (pruned ones zero) as the saliency, and
    rewinds."""

    def __init__(self, model, names, data, loss_fn, cfg: AfterTrainingConfig):
        if data is None:
            raise ValueError("after-training baselines need data to train on")
        self.model, self.names, self.data, self.loss_fn, self.cfg = model, names, data, loss_fn, cfg
        self.state = _snapshot(model)  # rewind target until the first run records step k
        self.rounds = 0

    def counts(self, total: int, keep: int) -> list[int]:
        return lottery_counts(total, [keep], self.cfg.rate)

    def saliency(self, masks):
        first, k = self.rounds == 0, self.cfg.rewind_iteration
        trained, rec = _train(self.model, masks, self.data, self.loss_fn, self.cfg,
                              "after-training pruning", start=0 if first else k,
                              record_at=k if first else None)
        if first:
            self.state = rec
        out = {n: trained[n].detach().clone() * (masks[n] if masks else 1) for n in self.names}
        self.model.load_state_dict(self.state)  # rewind (the next round's optimizer re-masks)
        self.rounds += 1
        return out


def _imp(model, names, data, loss_fn, cfg: AfterTrainingConfig, keeps, iterative: bool):
    """Train-prune-rewind to every kept count in ``keeps`` (global thresholds).

    Iterative (lottery): :class:`LotteryRounds` through :func:`lottery_counts` of all the
    requested counts, so one run yields the masks of every requested sparsity along the way.
    One-shot (magnitude after training): one dense training, every count thresholded from the
    same trained weights.

    Returns:
        ``({keep: masks}, rewind state, rounds)``.
    """
    params = dict(model.named_parameters())
    total = sum(params[n].numel() for n in names)
    ones = {n: torch.ones_like(params[n], dtype=torch.bool) for n in names}
    if not iterative:
        if data is None:
            raise ValueError("after-training baselines need data to train on")
        state, out = _snapshot(model), {}
        if min(keeps) < total:
            trained, state = _train(model, None, data, loss_fn, cfg, "after-training pruning",
                                    record_at=cfg.rewind_iteration)
            out = {keep: threshold({n: trained[n].detach().abs() for n in names}, keep)
                   for keep in keeps}
        return {keep: out.get(keep, ones) for keep in keeps}, state, int(bool(out))
    rounds = LotteryRounds(model, names, data, loss_fn, cfg)
    counts, out = lottery_counts(total, keeps, cfg.rate), {}
    bar = tqdm(total=len(counts), desc="train-prune-rewind rounds", leave=False)

    def record(r, masks):  # every count the rounds pass through, for every requested sparsity
        out[counts[r - 1]] = masks
        bar.update()

    prune_rounds(counts, lambda r, masks: {n: s.abs() for n, s in rounds.saliency(masks).items()},
                 threshold, on_round=record)
    bar.close()
    return {keep: out.get(keep, ones) for keep in keeps}, rounds.state, rounds.rounds


def prune_after_training(model: torch.nn.Module, method: str, sparsities, data, *,
                         loss_fn=None, prunable=None, **options) -> Tickets:
    """Masks at several sparsities and the weights to rewind to, from one run.

    Args:
        model: the network at initialization; left exactly as it was (a private copy trains).
        method: ``"lottery"`` (iterative, ``rate`` per round) or ``"magnitude_after_training"``
            (one-shot).
        sparsities: a number or a sequence of numbers in [0, 1). The lottery's rounds pass
            through each of them, so one run gives them all.
        data: an iterable of ``(inputs, targets)`` batches, one pass per epoch.
        loss_fn: as for ``sp.prune``.
        prunable: as for ``sp.prune``.
        **options: :class:`AfterTrainingConfig` fields (``epochs``, ``lr``, ``rate``,
            ``rewind_iteration``, ...).

    Returns:
        :class:`Tickets`; ``masks[s]`` equals ``sp.prune(model, method, s, data, ...)`` when
        ``s`` is the only (or the least sparse) requested sparsity.

    Shapes:
        ``masks[s][name].shape == state[name].shape == dict(model.named_parameters())[name]
        .shape``.
    """
    if method not in METHODS:
        raise ValueError(f"prune_after_training: method must be one of {METHODS}, got {method!r}")
    single = isinstance(sparsities, (int, float))
    sparsities = [sparsities] if single else list(sparsities)
    for s in sparsities:
        check_sparsity(s)
    cfg = make_config(get_method(method), options)
    names = prunable_names(model, prunable)
    params = dict(model.named_parameters())
    keeps = {s: keep_count(params, names, s) for s in sparsities}
    with torch.enable_grad():
        by_keep, state, rounds = _imp(private_copy(model, names), names, reiterable(data),
                                      default_loss(loss_fn),
                                      cfg, list(keeps.values()), method == "lottery")
    return Tickets({s: by_keep[keeps[s]] for s in sparsities}, state, rounds,
                   cfg.rewind_iteration)


@register("lottery", AfterTrainingConfig, iterative=True)
def lottery_schedule(model, names, data, loss_fn, cfg: AfterTrainingConfig) -> LotteryRounds:
    """Lottery-ticket rounds; ``sp.score`` gives the first round's |w| after dense training."""
    return LotteryRounds(model, names, data, loss_fn, cfg)


@register("magnitude_after_training", AfterTrainingConfig)
def magnitude_after_saliency(model, names, data, loss_fn, cfg: AfterTrainingConfig):
    """The weights after training the dense model (scores: their magnitude)."""
    if data is None:
        raise ValueError("after-training baselines need data to train on")
    params, _ = _train(model, None, data, loss_fn, cfg, "after-training scores")
    return {n: params[n].detach() for n in names}
