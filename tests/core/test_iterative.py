"""The one iterative pruning engine (``prune_rounds``): rounds scored under the previous round's
masks, thresholded to each count, observed after every round, and resumable from any round with
the same result (checked against a round-by-round loop written with plain torch.topk)."""

import torch

from sparsepai.core.iterative import prune_rounds

SHAPES = {"a": (3, 4), "b": (5,)}


def _scores(r, masks):
    # deterministic, depends on the round and on the previous masks; distinct values (no ties)
    g = torch.Generator().manual_seed(r)
    out = {n: torch.rand(s, generator=g, dtype=torch.float64) for n, s in SHAPES.items()}
    if masks is not None:
        out = {n: torch.where(masks[n], out[n] + 1.0, out[n]) for n in out}
    return out


def _topk(scores, keep):
    flat = torch.cat([scores[n].reshape(-1) for n in SHAPES])
    m = torch.zeros(flat.numel(), dtype=torch.bool)
    m[torch.topk(flat, keep).indices] = True
    out, i = {}, 0
    for n, s in SHAPES.items():
        size = torch.Size(s).numel()
        out[n] = m[i:i + size].view(s)
        i += size
    return out


def test_rounds_match_a_plain_loop_and_resume_from_any_round():
    counts = [13, 8, 4, 1]
    seen = []
    got = prune_rounds(counts, _scores, _topk, on_round=lambda r, m: seen.append((r, m)))
    masks, want = None, []
    for r, k in enumerate(counts, 1):
        masks = _topk(_scores(r, masks), k)
        want.append(masks)
    assert [r for r, _ in seen] == [1, 2, 3, 4]
    for (_, m), w in zip(seen, want):
        assert all(torch.equal(m[n], w[n]) for n in SHAPES)
    assert all(torch.equal(got[n], want[-1][n]) for n in SHAPES)
    assert [sum(int(m[n].sum()) for n in SHAPES) for _, m in seen] == counts
    for done in range(len(counts) + 1):  # resumed after round `done`
        start = want[done - 1] if done else None
        res = prune_rounds(counts, _scores, _topk, masks=start, first=done + 1)
        assert all(torch.equal(res[n], want[-1][n]) for n in SHAPES)


def test_no_round_returns_the_given_masks():
    assert prune_rounds([], _scores, _topk) is None
    m = {"a": torch.ones(3, 4, dtype=torch.bool)}
    assert prune_rounds([5], _scores, _topk, masks=m, first=2) is m
