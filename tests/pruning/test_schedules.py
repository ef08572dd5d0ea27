"""Iterative methods keep their schedules under every thresholding mode: SynFlow and FORCE with
``scope="layer"`` or ``min_per_layer`` run all their rounds, each thresholded that way, against
an independent round-by-round computation written with plain torch (it was once silently
replaced by one round of scores)."""

import pytest
import torch
import torch.nn.functional as F

import sparsepai as sp
from tests.tiny_nets import batches, mlp

NAMES = ["0.weight", "2.weight"]


def synflow_oracle(model):
    """|w * dR/dw| of the |w| network (float64) on a ones input, for masks."""
    W1, b1 = model[0].weight.detach().abs(), model[0].bias.detach().abs()
    W2, b2 = model[2].weight.detach().abs(), model[2].bias.detach().abs()

    def scores(masks):
        w1 = (W1 * masks[0]).requires_grad_() if masks else W1.clone().requires_grad_()
        w2 = (W2 * masks[1]).requires_grad_() if masks else W2.clone().requires_grad_()
        r = (torch.tanh(torch.ones(1, 4, dtype=torch.float64) @ w1.T + b1) @ w2.T + b2).sum()
        g1, g2 = torch.autograd.grad(r, [w1, w2])
        return [(g1 * w1).abs().detach(), (g2 * w2).abs().detach()]

    return scores


def force_oracle(model, data):
    """|g(w0 * m) * w0| summed over the batches (cross-entropy)."""
    W1, b1 = model[0].weight.detach(), model[0].bias.detach()
    W2, b2 = model[2].weight.detach(), model[2].bias.detach()

    def scores(masks):
        w1 = (W1 * masks[0] if masks else W1.clone()).requires_grad_()
        w2 = (W2 * masks[1] if masks else W2.clone()).requires_grad_()
        g1, g2 = torch.zeros_like(W1), torch.zeros_like(W2)
        for x, y in data:
            a, b = torch.autograd.grad(
                F.cross_entropy(torch.tanh(x @ w1.T + b1) @ w2.T + b2, y), [w1, w2])
            g1, g2 = g1 + a, g2 + b
        return [(g1 * W1).abs(), (g2 * W2).abs()]

    return scores


def top(flat_scores, k):
    mask = torch.zeros(flat_scores.numel(), dtype=torch.bool)
    mask[torch.sort(flat_scores, descending=True, stable=True).indices[:k]] = True
    return mask


def oracle_rounds(scores, shapes, keep, rounds, scope, floor):
    """The exponential schedule, every round thresholded per layer (``scope="layer"``) or
    globally with ``floor`` entries per layer kept first."""
    sizes = [torch.Size(s).numel() for s in shapes]
    total = sum(sizes)
    counts = [max(keep, int(round(total * (keep / total) ** (r / rounds))))
              for r in range(1, rounds)] + [keep]
    masks = None
    for k in counts:
        s = scores(masks)
        if scope == "layer":
            share = [k * n / total for n in sizes]
            per = [int(x) for x in share]
            for i in sorted(range(len(sizes)), key=lambda i: per[i] - share[i])[: k - sum(per)]:
                per[i] += 1
            masks = [top(t.flatten(), p).view(shape) for t, p, shape in zip(s, per, shapes)]
        else:
            boosted = []
            for t in s:
                t = t.flatten().clone()
                t[top(t, floor)] = float("inf")
                boosted.append(t)
            flat = top(torch.cat(boosted), k)
            masks = [m.view(shape) for m, shape in zip(flat.split(sizes), shapes)]
    return masks


@pytest.mark.parametrize("method", ["synflow", "force"])
@pytest.mark.parametrize("mode", [{"scope": "layer"}, {"min_per_layer": 3}])
def test_iterative_methods_keep_their_schedule_under_every_threshold(method, mode):
    model = mlp()
    data = batches(2)
    rounds, keep = 4, 35 - round(0.8 * 35)
    opts = {"rounds": rounds} if method == "synflow" else {"iterations": rounds, "batches": 2}
    got = sp.prune(model, method, 0.8, data, **opts, **mode)
    scores = synflow_oracle(model) if method == "synflow" else force_oracle(model, data)
    shapes = [model[0].weight.shape, model[2].weight.shape]
    want = oracle_rounds(scores, shapes, keep, rounds, mode.get("scope", "global"),
                         mode.get("min_per_layer", 0))
    for n, w in zip(NAMES, want):
        assert torch.equal(got[n], w), n
    assert sum(int(m.sum()) for m in got.values()) == keep
    # and this is not what one round of scores thresholded the same way gives
    one = oracle_rounds(scores, shapes, keep, 1, mode.get("scope", "global"),
                        mode.get("min_per_layer", 0))
    assert not all(torch.equal(got[n], w) for n, w in zip(NAMES, one))


def test_global_scope_is_unchanged_by_the_thresholding_modes():
    model = mlp()
    data = batches(2)
    got = sp.prune(model, "synflow", 0.8, data, rounds=4)
    want = oracle_rounds(synflow_oracle(model), [model[0].weight.shape, model[2].weight.shape],
                         7, 4, "global", 0)
    for n, w in zip(NAMES, want):
        assert torch.equal(got[n], w), n
