"""Baselines that train first: magnitude after training and lottery-ticket rewinding (to
initialization and to an early iteration k), against an independent train-prune-rewind written
with torch.optim.SGD and gradient masking."""

import copy

import pytest
import torch
import torch.nn.functional as F

import sparsepai as sp
from tests.tiny_nets import batches, mlp

NAMES = ["0.weight", "2.weight"]
# lr large enough that the trained magnitudes (and so the masks) depend on where rounds resume
OPTS = dict(epochs=2, lr=0.5, momentum=0.9, weight_decay=0.0)


def sgd_run(model, data, epochs, masks=None, start=0, record_at=None):
    """torch.optim.SGD over ``epochs`` passes, skipping the first ``start`` iterations, pruned
    weights held at zero by zeroing their gradients; returns the state after ``record_at``
    steps."""
    params = dict(model.named_parameters())
    if masks:
        with torch.no_grad():
            for n, m in masks.items():
                params[n].mul_(m)
    opt = torch.optim.SGD(model.parameters(), lr=OPTS["lr"], momentum=OPTS["momentum"])
    step, rec = 0, None
    for _ in range(epochs):
        for x, y in data:
            if step == record_at:
                rec = copy.deepcopy(model.state_dict())
            step += 1
            if step <= start:
                continue
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            for n, m in (masks or {}).items():
                params[n].grad.mul_(m)
            opt.step()
    return rec


def reference_lottery(model, data, keep, k):
    """Iterative magnitude pruning, 20% of the remaining weights per round, rewinding to the
    weights after k steps of the first run."""
    model = copy.deepcopy(model)
    total = sum(p.numel() for n, p in model.named_parameters() if n in NAMES)
    masks, current, counts = None, total, []
    rewind = sgd_run(model, data, OPTS["epochs"], record_at=k)
    while True:
        params = dict(model.named_parameters())
        target = max(keep, int(round(current * 0.8)))
        scores = torch.cat([(params[n].detach().abs() * (masks[n] if masks else 1)).flatten()
                            for n in NAMES])
        flat = torch.zeros(total, dtype=torch.bool)
        flat[torch.topk(scores, target).indices] = True
        masks = dict(zip(NAMES, [c.view_as(params[n]) for c, n in
                                 zip(flat.split([params[n].numel() for n in NAMES]), NAMES)]))
        counts.append(target)
        current = target
        model.load_state_dict(rewind)
        if current == keep:
            return masks, rewind, counts
        sgd_run(model, data, OPTS["epochs"], masks=masks, start=k)


@pytest.mark.parametrize("k", [0, 3])
def test_lottery_matches_independent_train_prune_rewind(k):
    model = mlp()
    before = copy.deepcopy(model.state_dict())
    data = batches(4)
    got = sp.pruning.prune_after_training(model, "lottery", 0.5, data, rewind_iteration=k, **OPTS)
    want_masks, want_state, counts = reference_lottery(model, data, 35 - round(0.5 * 35), k)
    # 35 weights, 20% of the remaining per round: 28, 22, 18, then the target 17
    assert counts == [28, 22, 18, 17] and got.rounds == 4 and got.rewind_iteration == k
    for n in NAMES:
        assert torch.equal(got.masks[0.5][n], want_masks[n]), n
    for name, v in want_state.items():
        torch.testing.assert_close(got.state[name], v, rtol=1e-12, atol=1e-14)
    # sp.prune gives the same masks; the user's model is untouched
    masks = sp.prune(model, "lottery", 0.5, data, rewind_iteration=k, **OPTS)
    assert all(torch.equal(masks[n], want_masks[n]) for n in NAMES)
    assert all(torch.equal(before[n], v) for n, v in model.state_dict().items())
    if k:  # rewinding to k is not rewinding to initialization
        at_init = sp.prune(model, "lottery", 0.5, data, **OPTS)
        assert not all(torch.equal(masks[n], at_init[n]) for n in NAMES)


def test_rewind_state_is_the_weights_after_k_steps():
    model = mlp()
    data = batches(4)
    k = 5  # into the second epoch of 4 batches
    ticket = sp.pruning.prune_after_training(model, "lottery", 0.3, data, rewind_iteration=k,
                                             **OPTS)
    # oracle: the same training run, stopped after k steps
    ref = copy.deepcopy(model)
    opt = torch.optim.SGD(ref.parameters(), lr=OPTS["lr"], momentum=OPTS["momentum"])
    for x, y in (data * 2)[:k]:
        opt.zero_grad()
        F.cross_entropy(ref(x), y).backward()
        opt.step()
    for n, p in ref.named_parameters():
        torch.testing.assert_close(ticket.state[n], p.detach(), rtol=1e-12, atol=1e-14)
        assert not torch.equal(ticket.state[n], dict(model.named_parameters())[n].detach())
    # rewinding to 0 is the initialization itself
    init = sp.pruning.prune_after_training(model, "lottery", 0.3, data, **OPTS)
    assert all(torch.equal(init.state[n], v) for n, v in model.state_dict().items())
    with pytest.raises(ValueError, match="rewind_iteration=8 is not before the end"):
        sp.prune(model, "lottery", 0.3, data, rewind_iteration=8, **OPTS)
    with pytest.raises(ValueError, match="option .rewind_iteration. must be >= 0"):
        sp.prune(model, "lottery", 0.3, data, rewind_iteration=-1, **OPTS)


def test_one_lottery_run_gives_every_sparsity_along_the_way():
    model = mlp()
    data = batches(4)
    levels = [0.5, 0.2, 0.8]
    t = sp.pruning.prune_after_training(model, "lottery", levels, data, **OPTS)
    # kept after each round, 20% of the remaining (rounded), stopping at each level: 28 (the 20%
    # level), 22, 18, 17 (50%: 35 - round(17.5)), 14, 11, 9, 7 (80%)
    assert t.rounds == 8
    for s in levels:
        assert sum(int(m.sum()) for m in t.masks[s].values()) == 35 - round(s * 35)
    # nested: every sparser mask prunes what the denser ones pruned
    for a, b in [(0.2, 0.5), (0.5, 0.8)]:
        assert all(not (t.masks[b][n] & ~t.masks[a][n]).any() for n in NAMES)
    # the least sparse level is exactly what a single-sparsity run gives
    alone = sp.prune(model, "lottery", 0.2, data, **OPTS)
    assert all(torch.equal(alone[n], t.masks[0.2][n]) for n in NAMES)


def test_magnitude_after_training_matches_independent_training():
    model = mlp()
    data = batches(5)
    ref = copy.deepcopy(model)
    sgd_run(ref, data, 3)
    w = torch.cat([ref[0].weight.detach().abs().flatten(), ref[2].weight.detach().abs().flatten()])
    t = sp.pruning.prune_after_training(model, "magnitude_after_training", [0.6, 0.9], data,
                                        **dict(OPTS, epochs=3))
    assert t.rounds == 1
    for s in (0.6, 0.9):
        keep = w.numel() - round(s * w.numel())
        want = torch.zeros(w.numel(), dtype=torch.bool)
        want[torch.topk(w, keep).indices] = True
        got = torch.cat([t.masks[s][n].flatten() for n in NAMES])
        assert torch.equal(got, want), s
    one = sp.prune(model, "magnitude_after_training", 0.6, data, **dict(OPTS, epochs=3))
    assert all(torch.equal(one[n], t.masks[0.6][n]) for n in NAMES)


def test_lottery_rounds_differ_from_one_shot_and_bad_options():
    model = mlp()
    data = batches(4)
    lottery = sp.prune(model, "lottery", 0.5, data, epochs=2, lr=0.1, rate=0.2)
    one = sp.prune(model, "magnitude_after_training", 0.5, data, epochs=2, lr=0.1)
    assert not all(torch.equal(one[k], lottery[k]) for k in lottery)
    with pytest.raises(ValueError, match="option .rate. must be in \\(0, 1\\)"):
        sp.prune(model, "lottery", 0.5, data, rate=1.5)
    with pytest.raises(ValueError, match="need data"):
        sp.prune(model, "lottery", 0.5)
    with pytest.raises(ValueError, match="method must be one of"):
        sp.pruning.prune_after_training(model, "snip", 0.5, data)
    with pytest.raises(ValueError, match=r"sparsity must be in \[0, 1\)"):
        sp.pruning.prune_after_training(model, "lottery", [0.5, 1.0], data)
