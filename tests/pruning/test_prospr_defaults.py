"""ProsPr's defaults, chosen by the worst cells of benchmarks/bench_defaults_grid.py, pinned; the
paper's protocol (full meta-gradient, M + 1 distinct batches) and the official code's (one batch)
stay selectable by options."""

import dataclasses

import pytest
import torch

import sparsepai as sp
from sparsepai.pruning.prospr import ProsprConfig
from tests.tiny_nets import batches, mlp


def test_defaults_are_pinned():
    d = {f.name: f.default for f in dataclasses.fields(ProsprConfig)}
    assert d == {"meta_steps": 3, "inner_lr": 0.1, "inner_momentum": 0.0, "first_order": True,
                 "same_batch": False, "batches": 1, "inner_step": "sgd"}


def test_default_score_is_first_order_on_distinct_batches():
    model, data = mlp(), batches(4)
    default = sp.score(model, "prospr", data)
    fo = sp.score(model, "prospr", data, first_order=True, same_batch=False)
    full = sp.score(model, "prospr", data, first_order=False)
    for n in default:
        assert torch.equal(default[n], fo[n])
    assert not torch.allclose(default["0.weight"], full["0.weight"])
    # the default reads D_0..D_3: the meta-batch D_3 changes the scores
    other = data[:3] + batches(1, seed=9)
    assert not torch.equal(sp.score(model, "prospr", other)["0.weight"], default["0.weight"])


@pytest.mark.parametrize("first_order", [False, True])
def test_the_papers_protocol_reads_m_plus_one_batches(first_order):
    model, data = mlp(), batches(4)
    with pytest.raises(ValueError, match="needs 4 batches"):
        sp.score(model, "prospr", data[:3], first_order=first_order, same_batch=False)
    a = sp.score(model, "prospr", data, first_order=first_order, same_batch=False)
    b = sp.score(model, "prospr", data[:3] + batches(1, seed=9), first_order=first_order,
                 same_batch=False)
    assert not torch.equal(a["2.weight"], b["2.weight"])


@pytest.mark.parametrize("first_order", [False, True])
def test_the_official_protocol_reads_one_batch(first_order):
    model, data = mlp(), batches(4)
    one = sp.score(model, "prospr", data[:1], first_order=first_order, same_batch=True)
    many = sp.score(model, "prospr", data, first_order=first_order, same_batch=True)
    for n in one:
        assert torch.equal(one[n], many[n])


def test_channel_prospr_is_first_order_by_default():
    """Structured ProsPr's channel scores are first order by default (the defaults grid: the full
    meta-gradient lost more on ResNet-20 and LeNet-5); the full one is an option."""
    from sparsepai.structured.prune import group_scores
    from sparsepai.structured.analysis import analyse
    from tests.tiny_nets import convnet

    model = convnet()
    data = batches(4, shape=(1, 8, 8), classes=10, dtype=torch.float32)
    graph = analyse(model, data[0][0])
    loss = torch.nn.functional.cross_entropy

    def scores(**o):
        return group_scores(model, graph, "prospr", data, loss, {"cost_weighting": False, **o})

    default, full, fo = scores(), scores(first_order=False), scores(first_order=True)
    for gid in default:
        assert torch.equal(default[gid], fo[gid])
    assert any(not torch.allclose(default[g], full[g]) for g in default)


def test_channel_prospr_keeps_eight_channels_per_layer_by_default():
    """The former default thinned LeNet-5's convolutions to one channel each at 90% (chance
    accuracy on every seed of the grid): the default floor keeps min(8, channels) per layer,
    min_per_layer=1 restores the old floor, and scope="layer" (which takes no floor) still runs."""
    from sparsepai.experiments.models import get_model

    torch.manual_seed(0)
    model = get_model("lenet5", 10, 1, 28)
    data = batches(4, shape=(1, 28, 28), classes=10, dtype=torch.float32)
    masks = sp.prune(model, "prospr", 0.9, data, structured=True)
    kept = {n: int(m.sum()) for n, m in masks.items()}
    sizes = {n: m.numel() for n, m in masks.items()}
    assert all(kept[n] >= min(8, sizes[n]) for n in kept), kept
    one = sp.prune(model, "prospr", 0.9, data, structured=True, min_per_layer=1)
    assert any(int(one[n].sum()) < min(8, sizes[n]) for n in one)  # the floor did bind
    per_layer = sp.prune(model, "prospr", 0.5, data, structured=True, scope="layer",
                         unit="channels")
    assert all(int(m.sum()) == max(1, m.numel() - round(0.5 * m.numel()))
               for m in per_layer.values())


def test_default_channel_floor_lowers_itself_where_it_cannot_reach_the_sparsity():
    """A net whose layers have 8 channels or fewer keeps every weight at a floor of 8: the default
    floor then drops to the largest that reaches the sparsity, with a warning naming it (an
    explicit min_per_layer=8 still fails, naming the floor)."""
    from tests.tiny_nets import convnet

    data = batches(4, shape=(1, 8, 8), classes=10, dtype=torch.float32)
    import re

    with pytest.warns(RuntimeWarning, match=r"default min_per_layer=8 cannot reach sparsity "
                                            r"0.5 on this model; using min_per_layer=\d") as w:
        got = sp.prune(convnet(), "prospr", 0.5, data, structured=True)
    k = int(re.search(r"using min_per_layer=(\d)", str(w[0].message)).group(1))
    assert 1 <= k < 8
    same = sp.prune(convnet(), "prospr", 0.5, data, structured=True, min_per_layer=k)
    assert all(torch.equal(got[n], same[n]) for n in got)
    with pytest.raises(ValueError, match="min_per_layer=8"):
        sp.prune(convnet(), "prospr", 0.5, data, structured=True, min_per_layer=8)
    kept = sum(int(m.sum()) for m in got.values())
    assert 0 < kept < sum(m.numel() for m in got.values())
