"""The operator-level graph on timm families the module-level graph could not prune: norm-act
layers, squeeze-and-excitation gates, same padding, dense concatenation, cross-stage splits,
re-parameterisable blocks, grouped convolutions. Float64: the slim model equals the masked
dense model."""

import copy

import pytest
import torch

import sparsepai as sp
from sparsepai.structured.analysis import analyse
from tests.structured.test_slim import close

timm = pytest.importorskip("timm")

# name -> (create_model kwargs, pairs of producers the graph must couple)
MODELS = {
    "resnet18d": ({}, [("layer1.0.conv2", "conv1.6")]),
    # at 32x32 the last stage's batch norms see 2 values per channel and amplify rounding
    "cspresnet50": ({"_size": 64}, []),
    "densenet121": ({"growth_rate": 8, "block_config": (2, 2, 2, 2)}, []),
    # squeeze-and-excitation: the gate's producer and the gated stream share their channels
    "efficientnet_b0": ({}, [("blocks.1.0.se.conv_expand", "blocks.1.0.conv_pw")]),
    "tf_efficientnet_b0": ({}, [("blocks.1.0.se.conv_expand", "blocks.1.0.conv_pw")]),
    "mobilenetv3_small_050": ({}, [("blocks.0.0.se.conv_expand", "conv_stem")]),
    "rexnet_100": ({}, []),
    "repvgg_a0": ({}, []),
    # grouped convolutions, pruned within their groups (the same channels of every group)
    "regnetx_002": ({}, []),
    "resnext26ts": ({}, []),
    "convnext_atto": ({}, []),
    # linear + batch norm over the flattened tokens, then reshape_as: MLP features pruned
    # (at 64x64 the last stage has 1 token: its train-mode batch norms see 2 values)
    "levit_128s": ({"img_size": 128, "_size": 128}, []),
}


def _build(name, kwargs):
    torch.manual_seed(0)
    kwargs = dict(kwargs)
    size = kwargs.pop("_size", 32)
    model = timm.create_model(name, pretrained=False, num_classes=5, **kwargs).double()
    g = torch.Generator().manual_seed(0)
    for m in model.modules():  # random statistics, so that zeroed norm parameters matter
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.weight.data = torch.rand(n, generator=g, dtype=torch.float64) + 0.5
            m.bias.data = torch.randn(n, generator=g, dtype=torch.float64) * 0.1
            m.running_mean = torch.randn(n, generator=g, dtype=torch.float64) * 0.1
            m.running_var = torch.rand(n, generator=g, dtype=torch.float64) + 0.5
    return model.eval(), torch.randn(2, 3, size, size, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_timm_slim_equals_masked_dense(name):
    kwargs, coupled = MODELS[name]
    model, x = _build(name, kwargs)
    before = copy.deepcopy(model.state_dict())
    masks = sp.prune(model, "magnitude", 0.4, structured=True, example_inputs=x)
    graph = analyse(model)  # the graph prune built (cached for this architecture)
    assert graph.method == "export"
    for a, b in coupled:
        assert graph.producer_group[a] == graph.producer_group[b], (a, b)
    slim = sp.slim(model, masks)
    dense = sp.apply_masks(copy.deepcopy(model), masks)
    for k, v in model.state_dict().items():  # the user's model is untouched
        assert torch.equal(v, before[k]), k
    n_slim = sum(p.numel() for p in slim.parameters())
    assert n_slim < 0.8 * sum(p.numel() for p in model.parameters())
    for mode in ("eval", "train"):
        getattr(slim, mode)()
        getattr(dense, mode)()
        with torch.no_grad():
            close(slim(x), dense(x))


@pytest.mark.parametrize("name, conv", [("regnetx_002", "s2.b1.conv2.conv"),
                                        ("resnext26ts", "stages.1.0.conv2_kxk.conv")])
def test_grouped_convolutions_pruned_within_groups(name, conv):
    """Input and output channels of a grouped convolution are pruned at the same positions in
    every group: slim keeps ``groups`` with fewer channels per group, equal to masked dense."""
    model, x = _build(name, {})
    graph = analyse(model, x)
    groups = model.get_submodule(conv).groups
    out = graph.groups[graph.producer_group[conv]]
    assert out.prunable and out.tiles == {conv: groups}
    (read,) = [r for r in graph.reads if r.module == conv]
    inp = graph.groups[read.group]
    assert inp.prunable and all(inp.tiles[p] == groups for p in inp.producers)
    masks = sp.prune(model, "magnitude", 0.5, structured=True, unit="channels", scope="layer",
                     example_inputs=x)
    slim = sp.slim(model, masks)
    dense = sp.apply_masks(copy.deepcopy(model), masks)
    new = slim.get_submodule(conv)
    old = model.get_submodule(conv)
    assert new.groups == groups
    assert (new.in_channels, new.out_channels) == (old.in_channels // 2, old.out_channels // 2)
    for mode in ("eval", "train"):
        getattr(slim, mode)()
        getattr(dense, mode)()
        with torch.no_grad():
            close(slim(x), dense(x))


@pytest.mark.parametrize("name, kwargs, whole, pruned", [
    # class attention computes its head size from the input's width: its heads stay whole
    ("cait_xxs24_224", {"depth": 1, "depth_token_only": 1, "img_size": 32, "patch_size": 8},
     "blocks_token_only.0.attn.q", "blocks.0.mlp.fc1"),
    # a packed SwiGLU (fc1 chunked into value and gate) is pruned; the attention's heads stay
    # whole (its rotary embedding's stack is not followed, and it reshapes its output to the
    # input's width)
    ("eva02_tiny_patch14_224", {"depth": 1, "img_size": 28, "_size": 28},
     "blocks.0.attn.qkv", "blocks.0.mlp.fc1"),
])
def test_timm_forwards_that_recompute_widths(name, kwargs, whole, pruned):
    model, x = _build(name, kwargs)
    graph = analyse(model, x)
    assert not graph.groups[graph.producer_group[whole]].prunable
    assert graph.groups[graph.producer_group[pruned]].prunable
    masks = sp.prune(model, "magnitude", 0.5, structured=True, unit="channels", scope="layer",
                     example_inputs=x)
    assert not bool(masks[pruned].all())
    slim = sp.slim(model, masks)
    dense = sp.apply_masks(copy.deepcopy(model), masks)
    for mode in ("eval", "train"):
        getattr(slim, mode)()
        getattr(dense, mode)()
        with torch.no_grad():
            close(slim(x), dense(x))
