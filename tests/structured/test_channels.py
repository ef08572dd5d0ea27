"""sp.prune(..., structured=True): channel scores against independent computations, exact
sparsity accounting, coupling, and bad input."""

import copy

import pytest
import torch
from torch import nn
from torch.func import functional_call

import sparsepai as sp
from sparsepai.structured.analysis import analyse
from sparsepai.structured.channels import kept_weights, resolve, weight_masks
from tests.structured.helpers import build


def _data(x, n=4, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(x.shape, generator=g), torch.randint(0, classes, (x.shape[0],),
                                                             generator=g)) for _ in range(n)]


class Chain(nn.Module):
    """Convolutions without bias in a chain: one producer per group, no coupling."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(2, 6, 3, padding=1, bias=False)
        self.b1 = nn.BatchNorm2d(6)
        self.c2 = nn.Conv2d(6, 5, 3, padding=1, bias=False)
        self.fc = nn.Linear(5 * 4 * 4, 3)

    def forward(self, x):
        x = torch.relu(self.b1(self.c1(x)))
        x = torch.max_pool2d(torch.relu(self.c2(x)), 2)
        return self.fc(torch.flatten(x, 1))


def _kept_from_masks(model, channel_masks):
    """Conv/Linear weights left by the element masks the channel masks imply."""
    wm = weight_masks(model, resolve(analyse(model), channel_masks))
    return sum(int(wm[f"{n}.weight"].sum()) if f"{n}.weight" in wm else m.weight.numel()
               for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear)))


def _gate_scores(model, data, meta_steps=None):
    """Oracle for 3SP: |dL/dc| with a gate c on each conv's output channels (forward hooks)."""
    gates = {n: torch.ones(m.out_channels, requires_grad=True)
             for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    hooks = [m.register_forward_hook(lambda mod, i, o, n=n: o * gates[n].view(1, -1, 1, 1))
             for n, m in model.named_modules() if n in gates]
    x, y = data[0]
    loss = nn.functional.cross_entropy(model(x), y)
    grads = torch.autograd.grad(loss, list(gates.values()))
    for h in hooks:
        h.remove()
    return {n: g.abs() for n, g in zip(gates, grads)}


def test_snip_channel_scores_equal_gate_gradients():
    torch.manual_seed(0)
    model = Chain()
    x = torch.randn(4, 2, 8, 8)
    data = _data(x)
    graph = analyse(model, x)
    from sparsepai.structured.prune import group_scores

    got = group_scores(model, graph, "snip", data, nn.functional.cross_entropy, {})
    want = _gate_scores(copy.deepcopy(model), data)
    for g in graph.prunable_groups():
        (p,) = g.producers
        torch.testing.assert_close(got[g.id], want[p])


def test_prospr_channel_meta_gradient_against_unrolled_oracle():
    """Full ProsPr on channel masks: d/dc of the loss after M SGD steps, with w_0 = c * w_init
    for a per-channel c, computed by differentiating with respect to c directly."""
    torch.manual_seed(0)
    model = Chain()
    x = torch.randn(4, 2, 8, 8)
    data = _data(x, 3)
    graph = analyse(model, x)
    from sparsepai.structured.prune import group_scores

    lr, steps = 0.1, 2
    got = group_scores(model, graph, "prospr", data, nn.functional.cross_entropy,
                       {"meta_steps": steps, "inner_lr": lr, "same_batch": False,
                        "first_order": False, "cost_weighting": False})
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    buffers = {n: b.detach().clone() for n, b in model.named_buffers()}
    c = {"c1": torch.ones(6, requires_grad=True), "c2": torch.ones(5, requires_grad=True)}
    w = {n: (c[n[:2]].view(-1, 1, 1, 1) * p if n in ("c1.weight", "c2.weight") else
             p.requires_grad_(True)) for n, p in params.items()}
    model.train()
    for m in range(steps):
        xb, yb = data[m]
        loss = nn.functional.cross_entropy(functional_call(model, (w, buffers), (xb,)), yb)
        gs = torch.autograd.grad(loss, list(w.values()), create_graph=True)
        w = {n: t - lr * g for (n, t), g in zip(w.items(), gs)}
    xb, yb = data[steps]
    loss = nn.functional.cross_entropy(functional_call(model, (w, buffers), (xb,)), yb)
    want = torch.autograd.grad(loss, [c["c1"], c["c2"]])
    for g in graph.prunable_groups():
        (p,) = g.producers
        torch.testing.assert_close(got[g.id], want[0 if p == "c1" else 1].abs(), atol=1e-6,
                                   rtol=1e-4)


def test_prospr_zero_steps_equals_3sp():
    model, x = build("resnet20")
    data = _data(x, 2)
    a = sp.prune(model, "prospr", 0.7, data, structured=True, meta_steps=0,
                 cost_weighting=False)
    b = sp.prune(model, "snip", 0.7, data, structured=True)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_magnitude_channels_are_global_l1_ranking():
    torch.manual_seed(0)
    model = Chain()
    masks = sp.prune(model, "magnitude", 0.5, structured=True, unit="channels",
                     example_inputs=torch.randn(2, 2, 8, 8))
    norms = torch.cat([model.c1.weight.abs().sum((1, 2, 3)), model.c2.weight.abs().sum((1, 2, 3))])
    keep = 11 - round(0.5 * 11)
    # every layer keeps its best channel, then the global ranking fills the rest
    norms[torch.argmax(norms[:6])] = float("inf")
    norms[6 + torch.argmax(norms[6:])] = float("inf")
    want = torch.zeros(11, dtype=torch.bool)
    want[torch.argsort(norms, descending=True)[:keep]] = True
    assert torch.equal(torch.cat([masks["c1"], masks["c2"]]), want)
    assert set(masks) == {"c1", "c2"}  # never the classifier


@pytest.mark.parametrize("arch", ["resnet18", "vgg11", "mobilenet_v2", "lenet5", "catnet"])
@pytest.mark.parametrize("sparsity", [0.5, 0.9])
def test_weight_sparsity_is_the_closest_channel_count(arch, sparsity):
    model, x = build(arch)
    masks = sp.prune(model, "random", sparsity, structured=True, seed=3, example_inputs=x)
    n = sum(m.weight.numel() for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    target = n - round(sparsity * n)
    kept = _kept_from_masks(model, masks)
    graph = analyse(model, x)
    counts = {g.id: int(masks[g.producers[0]].sum()) for g in graph.prunable_groups()}
    assert kept_weights(model, graph, counts) == kept
    # one channel more or less (in score order) would be further from the target
    assert abs(kept - target) <= max(_channel_weight_sizes(model, graph))
    for g in graph.prunable_groups():  # coupled producers share one decision
        for p in g.producers:
            assert torch.equal(masks[p], masks[g.producers[0]])
            assert masks[p].any()
    # the slim model has exactly that many weights
    slim = sp.slim(model, masks)
    assert sum(m.weight.numel() for m in slim.modules()
               if isinstance(m, (nn.Conv2d, nn.Linear))) == kept


def _channel_weight_sizes(model, graph):
    """Upper bound on the weights one channel of each group carries (rows + columns)."""
    mods = dict(model.named_modules())
    out = []
    for g in graph.prunable_groups():
        s = sum(mods[p].weight[0].numel() for p in g.producers)
        s += sum(mods[r.module].weight[:, :r.factor].numel() for r in graph.reads
                 if r.group == g.id)
        s += sum(mods[m.module].weight[0].numel() for m in g.members if m.kind == "depthwise")
        out.append(s)
    return out


def test_channel_unit_is_exact():
    model, x = build("resnet20")
    masks = sp.prune(model, "magnitude", 0.6, structured=True, unit="channels",
                     example_inputs=x)
    graph = analyse(model, x)
    total = sum(g.size for g in graph.prunable_groups())
    kept = sum(int(masks[g.producers[0]].sum()) for g in graph.prunable_groups())
    assert kept == total - round(0.6 * total)


def test_scoring_leaves_model_untouched_and_is_deterministic():
    model, x = build("resnet20")
    data = _data(x, 4)
    before = copy.deepcopy(model.state_dict())
    model.eval()
    a = sp.prune(model, "prospr", 0.8, data, structured=True, meta_steps=2)
    b = sp.prune(model, "prospr", 0.8, data, structured=True, meta_steps=2)
    assert not model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    for k in a:
        assert torch.equal(a[k], b[k])


def test_apply_channel_masks_zeroes_channels():
    model, x = build("resnet20")
    masks = sp.prune(model, "magnitude", 0.7, structured=True, example_inputs=x)
    sp.apply_masks(model, masks)
    dropped = ~masks["layers.0.conv1"]
    assert bool((model.layers[0].conv1.weight[dropped] == 0).all())
    assert bool((model.layers[0].bn1.weight[dropped] == 0).all())
    assert bool((model.layers[0].conv2.weight[:, dropped] == 0).all())
    assert bool((model.layers[0].conv1.weight[~dropped] != 0).any())
    assert model.sparsepai_channel_masks.keys() == masks.keys()


def test_bad_input():
    model, x = build("resnet20")
    with pytest.raises(ValueError, match="supports the methods"):
        sp.prune(model, "grasp", 0.5, _data(x), structured=True)
    with pytest.raises(ValueError, match="unit"):
        sp.prune(model, "magnitude", 0.5, structured=True, unit="flops")
    with pytest.raises(ValueError, match="cannot reach sparsity"):
        sp.prune(model, "magnitude", 0.9999, structured=True, example_inputs=x)
    with pytest.raises(ValueError, match="example_inputs"):
        sp.prune(model, "magnitude", 0.5, structured=True)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        sp.prune(model, "magnitude", 1.0, structured=True)


def test_cost_weighting_prefers_cheap_channels():
    """3SP's compute weighting: with equal sensitivities, channels of the expensive layer
    (large feature maps) rank below those of the cheap one."""
    model, x = build("resnet20")
    data = _data(x, 1)
    graph = analyse(model, x)
    from sparsepai.structured.cost import channel_costs
    from sparsepai.structured.prune import group_scores

    plain = group_scores(model, graph, "snip", data, nn.functional.cross_entropy, {})
    weighted = group_scores(model, graph, "snip", data, nn.functional.cross_entropy,
                            {"cost_weighting": True})
    cost = channel_costs(model, graph, data)
    mean = torch.cat([cost[g.id] for g in graph.prunable_groups()]).mean()
    for g in graph.prunable_groups():
        torch.testing.assert_close(weighted[g.id], plain[g.id] * mean / cost[g.id])
    # costs: a first-stage channel (16x16 maps) costs more than a last-stage one (4x4)
    first = graph.producer_group["layers.0.conv1"]
    last = graph.producer_group["layers.8.conv1"]
    assert float(cost[first][0]) > float(cost[last][0])


@pytest.mark.parametrize("method", ["prospr", "magnitude", "random"])
def test_tempered_cost_weighting_divides_by_a_power_of_the_cost(method):
    """cost_weighting=alpha divides by (cost / mean cost) ** alpha for any method: 0.5 is the
    geometric middle of plain (0) and 3SP's weighting (1)."""
    from sparsepai.structured.cost import channel_costs
    from sparsepai.structured.prune import group_scores

    model, x = build("resnet20")
    data = _data(x, 4)
    graph = analyse(model, x)
    loss = nn.functional.cross_entropy
    opts = {"meta_steps": 1} if method == "prospr" else {}
    plain = group_scores(model, graph, method, data, loss, {**opts, "cost_weighting": False})
    cost = channel_costs(model, graph, data)
    mean = torch.cat([cost[g.id] for g in graph.prunable_groups()]).mean()
    for alpha in (0.5, 1, True):
        w = group_scores(model, graph, method, data, loss, {**opts, "cost_weighting": alpha})
        for g in graph.prunable_groups():
            torch.testing.assert_close(w[g.id], plain[g.id] / (cost[g.id] / mean) ** float(alpha))
    w0 = group_scores(model, graph, method, data, loss, {**opts, "cost_weighting": 0})
    for g in graph.prunable_groups():
        torch.testing.assert_close(w0[g.id], plain[g.id])
    for bad in (-0.5, float("nan"), "yes"):
        with pytest.raises(ValueError, match="cost_weighting must be a bool or a number >= 0"):
            sp.prune(model, method, 0.5, data, structured=True, cost_weighting=bad)


def test_layer_scope_keeps_the_same_fraction_of_every_layer():
    """scope='layer': each layer keeps its own best max(1, n - round(s n)) channels (filter L1
    norms computed here by hand), whatever the other layers' scores."""
    from tests.tiny_nets import convnet

    model = convnet()
    with torch.no_grad():
        model[3].weight.mul_(100)  # a global ranking would keep only the second layer's channels
    x = torch.randn(2, 1, 8, 8)
    masks = sp.prune(model, "magnitude", 0.5, structured=True, unit="channels", scope="layer",
                     example_inputs=x)
    assert set(masks) == {"0", "3"}
    for name in masks:
        w = dict(model.named_modules())[name].weight.detach()
        l1 = w.abs().flatten(1).sum(1)
        n = l1.numel()
        want = torch.zeros(n, dtype=torch.bool)
        want[torch.topk(l1, max(1, n - round(0.5 * n))).indices] = True
        assert torch.equal(masks[name], want), name
    glob = sp.prune(model, "magnitude", 0.5, structured=True, unit="channels", example_inputs=x)
    assert int(glob["0"].sum()) == 1  # the global ranking differs, so the test can tell them apart
    with pytest.raises(ValueError, match="scope='layer' .* unit='channels'"):
        sp.prune(model, "magnitude", 0.5, structured=True, scope="layer", example_inputs=x)
    with pytest.raises(ValueError, match="scope must be 'global' or 'layer'"):
        sp.prune(model, "magnitude", 0.5, structured=True, scope="net", example_inputs=x)


@pytest.mark.parametrize("method,default,other", [
    ("prospr", {"first_order": True, "cost_weighting": 0.5, "min_per_layer": 8},
     {"cost_weighting": 1.0}),
    ("snip", {"cost_weighting": False, "min_per_layer": 1}, {"cost_weighting": True}),
    ("magnitude", {"cost_weighting": False, "min_per_layer": 1}, {"cost_weighting": True})])
def test_structured_defaults_per_method(method, default, other):
    """ProsPr's channel masks are first order, tempered by cost (0.5) with a floor of 8 channels
    unless told otherwise (the defaults grid measured it); the other methods' are plain: the
    default equals the explicit setting, and differs from another weighting on a net whose
    channels cost differently."""
    from sparsepai.structured.prune import channel_defaults

    assert channel_defaults(method) == ({k: v for k, v in default.items()}
                                        if method == "prospr" else {})
    model, x = build("resnet20")
    data = _data(x, 2)
    opts = {"meta_steps": 1} if method == "prospr" else {}
    got = sp.prune(model, method, 0.7, data, structured=True, **opts)
    same = sp.prune(model, method, 0.7, data, structured=True, **default, **opts)
    changed = sp.prune(model, method, 0.7, data, structured=True, **{**default, **other}, **opts)
    assert all(torch.equal(got[k], same[k]) for k in got)
    assert any(not torch.equal(got[k], changed[k]) for k in got)


def test_min_per_layer_keeps_each_layers_best_channels_then_ranks_globally():
    """min_per_layer=k: each layer's k best channels (filter L1 norms by hand) are kept first,
    then the global ranking fills the channel budget."""
    from tests.tiny_nets import convnet

    model = convnet()
    with torch.no_grad():
        model[3].weight.mul_(100)  # the global ranking alone keeps one channel of layer "0"
    x = torch.randn(2, 1, 8, 8)
    l1 = {n: dict(model.named_modules())[n].weight.detach().abs().flatten(1).sum(1)
          for n in ("0", "3")}
    masks = sp.prune(model, "magnitude", 0.3, structured=True, unit="channels",
                     min_per_layer=3, example_inputs=x)
    ranked = {n: v.clone() for n, v in l1.items()}
    for v in ranked.values():
        v[torch.topk(v, 3).indices] = float("inf")
    flat = torch.cat([ranked["0"], ranked["3"]])
    want = torch.zeros(10, dtype=torch.bool)
    want[torch.argsort(flat, descending=True)[:10 - round(0.3 * 10)]] = True
    assert torch.equal(torch.cat([masks["0"], masks["3"]]), want)
    assert int(masks["0"].sum()) == 3
    plain = sp.prune(model, "magnitude", 0.3, structured=True, unit="channels", example_inputs=x)
    assert int(plain["0"].sum()) == 1  # so the floor is what changed the masks
    one = sp.prune(model, "magnitude", 0.3, structured=True, unit="channels", min_per_layer=1,
                   example_inputs=x)
    assert all(torch.equal(one[n], plain[n]) for n in plain)  # 1 is the default
    big = sp.prune(model, "magnitude", 0.5, structured=True, unit="channels", min_per_layer=50,
                   example_inputs=x)  # a floor above a layer's size keeps that layer whole
    assert bool(big["0"].all()) and bool(big["3"].all())


@pytest.mark.parametrize("arch", ["vgg11", "resnet20"])
def test_min_per_layer_with_weight_sparsity(arch):
    """With sparsity counted in weights: every layer keeps at least min_per_layer channels and
    the kept weights stay within one channel of the target."""
    model, x = build(arch)
    graph = analyse(model, x)
    plain = sp.prune(model, "magnitude", 0.9, structured=True, example_inputs=x)
    fewest = min(int(plain[g.producers[0]].sum()) for g in graph.prunable_groups())
    k = fewest + 2  # above what the plain ranking leaves in its thinnest layer
    masks = sp.prune(model, "magnitude", 0.9, structured=True, min_per_layer=k,
                     example_inputs=x)
    for g in graph.prunable_groups():
        assert int(masks[g.producers[0]].sum()) >= min(k, g.size), g.producers
    n = sum(m.weight.numel() for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    kept = _kept_from_masks(model, masks)
    assert abs(kept - (n - round(0.9 * n))) <= max(_channel_weight_sizes(model, graph))


def test_min_per_layer_bad_input():
    model, x = build("resnet20")
    with pytest.raises(TypeError, match="prune: min_per_layer must be an int, got str"):
        sp.prune(model, "magnitude", 0.5, structured=True, min_per_layer="3", example_inputs=x)
    with pytest.raises(ValueError, match="prune: min_per_layer must be >= 0"):
        sp.prune(model, "magnitude", 0.5, structured=True, min_per_layer=-1, example_inputs=x)
    with pytest.raises(ValueError, match="goes with scope='global'"):
        sp.prune(model, "magnitude", 0.5, structured=True, unit="channels", scope="layer",
                 min_per_layer=2, example_inputs=x)
    with pytest.raises(ValueError, match="cannot reach sparsity 0.9: keeping min_per_layer=64"):
        sp.prune(model, "magnitude", 0.9, structured=True, min_per_layer=64, example_inputs=x)
