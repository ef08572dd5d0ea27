"""Sanity-check ablations: shuffle within layers, re-initialise, invert."""

import pytest
import torch

import sparsepai as sp
from sparsepai.masks.ablate import invert_masks, reinit_, shuffle_masks
from tests.tiny_nets import batches, convnet


def _masks(model, sparsity=0.7, method="snip"):
    data = batches(2, shape=(1, 8, 8), classes=10, dtype=torch.float32)
    return sp.prune(model, method, sparsity, data), data


def test_shuffle_keeps_counts_moves_positions_and_is_deterministic():
    masks, _ = _masks(convnet())
    before = {n: m.clone() for n, m in masks.items()}
    a, b, c = shuffle_masks(masks, seed=3), shuffle_masks(masks, seed=3), shuffle_masks(masks, 4)
    for n, m in masks.items():
        assert a[n].shape == m.shape and a[n].dtype == torch.bool
        assert int(a[n].sum()) == int(m.sum())  # exactly the same kept count per layer
        assert torch.equal(a[n], b[n])  # same seed, same masks
    # the big layers' positions change (a permutation leaving a 70%-sparse layer of >= 36
    # entries exactly in place has probability < 1e-9)
    assert all(not torch.equal(a[n], masks[n]) for n in masks if masks[n].numel() >= 36)
    assert any(not torch.equal(a[n], c[n]) for n in masks)
    assert all(torch.equal(masks[n], m) for n, m in before.items())  # the input is not changed


def test_shuffle_permutes_coupled_channel_masks_alike():
    from sparsepai.experiments.models import ResNet20

    torch.manual_seed(0)
    model = ResNet20(10, 1, width=4)
    data = batches(1, shape=(1, 8, 8), classes=10, dtype=torch.float32)
    masks = sp.prune(model, "magnitude", 0.5, data, structured=True)
    out = shuffle_masks(masks, seed=0)
    for n, m in masks.items():
        assert m.dim() == 1 and int(out[n].sum()) == int(m.sum())
        for k, other in masks.items():  # coupled (equal) masks stay equal
            if torch.equal(m, other):
                assert torch.equal(out[n], out[k])
    assert any(not torch.equal(out[n], masks[n]) for n in masks)
    sp.slim(model, out)  # still a valid set of channel masks


def test_invert_keeps_counts_and_selects_the_lowest():
    model = convnet()
    masks, data = _masks(model)
    scores = sp.score(model, "snip", data)
    inv = invert_masks(scores, masks)
    for n, m in masks.items():
        k = int(m.sum())
        assert int(inv[n].sum()) == k
        s = scores[n].flatten()
        kept, dropped = s[inv[n].flatten()], s[~inv[n].flatten()]
        # an independent oracle: the k-th smallest score bounds the kept ones
        if 0 < k < s.numel():
            assert kept.max() <= torch.sort(s).values[k - 1]
            assert kept.max() <= dropped.min()
    assert all(torch.equal(inv[n], invert_masks(scores, masks)[n]) for n in masks)


def test_invert_ties_broken_by_position():
    s = {"w": torch.tensor([[1.0, 0.0], [0.0, 0.0]])}
    m = {"w": torch.tensor([[True, True], [False, False]])}
    assert invert_masks(s, m)["w"].tolist() == [[False, True], [True, False]]


def test_reinit_changes_weights_not_masks_and_is_seeded():
    model = convnet()
    masks, _ = _masks(model)
    before = {n: m.clone() for n, m in masks.items()}
    w0 = {n: p.detach().clone() for n, p in model.named_parameters()}
    state = torch.random.get_rng_state()
    reinit_(model, masks, seed=5)
    assert torch.equal(state, torch.random.get_rng_state())  # global random state untouched
    params = dict(model.named_parameters())
    for n, m in masks.items():
        assert torch.equal(m, before[n])
        assert bool((params[n][~m] == 0).all())  # masks applied to the new weights
        assert not torch.equal(params[n][m], w0[n][m])
    other = convnet()
    reinit_(other, masks, seed=5)
    assert all(torch.equal(p, dict(other.named_parameters())[n]) for n, p in params.items())
    reinit_(other, masks, seed=6)
    assert not torch.equal(params["0.weight"], dict(other.named_parameters())["0.weight"])


def test_reinit_with_the_models_own_init():
    from sparsepai.experiments.models.small import kaiming_init

    model = convnet()
    reinit_(model, seed=0, init=kaiming_init)
    w = model[0].weight
    torch.manual_seed(0)
    ref = torch.nn.init.kaiming_normal_(torch.empty_like(w), mode="fan_in", nonlinearity="relu")
    assert torch.equal(w, ref)  # the init function ran under the seed


@pytest.mark.parametrize("call, match", [
    (lambda: shuffle_masks({}), "shuffle_masks: masks"),
    (lambda: shuffle_masks({"w": torch.ones(3)}), r"shuffle_masks: masks\['w'\]"),
    (lambda: shuffle_masks({"w": torch.ones(3, dtype=torch.bool)}, seed=1.5), "seed"),
    (lambda: invert_masks({}, {"w": torch.ones(3, dtype=torch.bool)}), "no entry"),
    (lambda: invert_masks({"w": torch.ones(4)}, {"w": torch.ones(3, dtype=torch.bool)}),
     "shaped"),
    (lambda: invert_masks({"w": torch.tensor([1.0, float("nan")])},
                          {"w": torch.ones(2, dtype=torch.bool)}), "non-finite"),
    (lambda: reinit_("net"), "reinit_: model"),
    (lambda: reinit_(torch.nn.Linear(2, 2), init=3), "reinit_: init"),
])
def test_bad_inputs(call, match):
    with pytest.raises(ValueError, match=match):
        call()
