"""The one thresholding path: global, per-layer and min-per-layer keep-masks against an
independent ranking (a stable sort of the concatenated scores), exact counts, ties, NaN, and
bad input."""

import pytest
import torch

from sparsepai.masks.threshold import layer_counts, threshold


def scores(seed=0, sizes=((4, 5), (7,), (2, 3, 2))):
    g = torch.Generator().manual_seed(seed)
    return {f"l{i}": torch.randn(s, generator=g, dtype=torch.float64) for i, s in enumerate(sizes)}


def oracle(tensors, keep):
    """Top ``keep`` of the concatenation; ties and NaN (lowest) in position order."""
    flat = torch.cat([t.flatten() for t in tensors]).nan_to_num(nan=-torch.inf)
    order = sorted(range(flat.numel()), key=lambda i: (-flat[i].item(), i))
    mask = torch.zeros(flat.numel(), dtype=torch.bool)
    mask[order[:keep]] = True
    return [m.view_as(t) for m, t in zip(mask.split([t.numel() for t in tensors]), tensors)]


@pytest.mark.parametrize("keep", [0, 1, 13, 30, 39])
def test_global_is_the_top_k_of_the_concatenation(keep):
    s = scores()
    got = threshold(s, keep)
    assert list(got) == list(s)
    for m, w in zip(got.values(), oracle(list(s.values()), keep)):
        assert torch.equal(m, w)
    # a list in, a list out, the same masks
    assert all(torch.equal(a, b) for a, b in zip(threshold(list(s.values()), keep), got.values()))


def test_ties_and_nan_are_ranked_like_the_oracle():
    s = {"a": torch.tensor([1.0, float("nan"), 2.0, 1.0]), "b": torch.tensor([1.0, 2.0, -0.0])}
    for keep in range(8):
        for m, w in zip(threshold(s, keep).values(), oracle(list(s.values()), keep)):
            assert torch.equal(m, w), keep


def test_layer_counts_are_largest_remainders():
    assert sorted(layer_counts([10, 10, 10], 10)) == [3, 3, 4]
    for sizes, keep in [([20, 7, 12], 19), ([5, 5], 0), ([3, 100, 1], 104), ([9], 4)]:
        per = layer_counts(sizes, keep)
        total = sum(sizes)
        assert sum(per) == keep and all(0 <= p <= s for p, s in zip(per, sizes))
        assert all(abs(p - keep * s / total) < 1 for p, s in zip(per, sizes))


@pytest.mark.parametrize("keep", [0, 9, 30, 39])
def test_layer_scope_ranks_within_each_layer(keep):
    s = scores(1)
    got = threshold(s, keep, scope="layer")
    per = layer_counts([t.numel() for t in s.values()], keep)
    for (n, t), k in zip(s.items(), per):
        assert torch.equal(got[n], oracle([t], k)[0])
    assert sum(int(m.sum()) for m in got.values()) == keep


def test_min_per_layer_keeps_each_layers_best_then_ranks_globally():
    s = scores(2)
    s["l1"] = s["l1"] - 100  # this layer would be pruned away entirely
    assert not threshold(s, 10)["l1"].any()
    got = threshold(s, 10, min_per_layer=2)
    assert sum(int(m.sum()) for m in got.values()) == 10
    for n, t in s.items():
        assert got[n][oracle([t], 2)[0]].all()  # each layer's best two are kept
    # the rest: the best remaining scores globally
    rest = {n: t.masked_fill(oracle([t], 2)[0], float("inf")) for n, t in s.items()}
    for m, w in zip(got.values(), oracle(list(rest.values()), 10)):
        assert torch.equal(m, w)
    # a layer smaller than the floor keeps all of it
    small = {"a": torch.tensor([-5.0]), "b": torch.arange(6.0)}
    assert threshold(small, 3, min_per_layer=2)["a"].all()


def test_bad_input():
    s = scores()
    with pytest.raises(ValueError, match="threshold: scope must be 'global' or 'layer'"):
        threshold(s, 3, scope="model")
    with pytest.raises(ValueError, match="min_per_layer must be an int >= 0"):
        threshold(s, 3, min_per_layer=-1)
    with pytest.raises(ValueError, match="min_per_layer=5 keeps 15 entries, more than the 10"):
        threshold(s, 10, min_per_layer=5)
    with pytest.raises(ValueError, match="applies to scope='global' only"):
        threshold(s, 10, scope="layer", min_per_layer=1)
    with pytest.raises(ValueError, match=r"k must be in \[0, 39\]"):
        threshold(s, 40)
