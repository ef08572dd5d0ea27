"""The channel dependency graph: coupling, pass-through, and what is never pruned."""

import torch
from torch import nn

from sparsepai.experiments.models import get_model
from sparsepai.structured.analysis import analyse


def _group_of(graph, name):
    return graph.groups[graph.producer_group[name]]


def test_resnet_residual_streams_are_coupled():
    g = analyse(get_model("resnet18"), torch.randn(2, 3, 32, 32))
    stem = _group_of(g, "conv1")
    assert set(stem.producers) == {"conv1", "layer1.0.conv2", "layer1.1.conv2"}
    assert {m.module for m in stem.members} == {"bn1", "layer1.0.bn2", "layer1.1.bn2"}
    stage2 = _group_of(g, "layer2.0.downsample.0")
    assert set(stage2.producers) == {"layer2.0.conv2", "layer2.0.downsample.0",
                                     "layer2.1.conv2"}
    inner = _group_of(g, "layer2.0.conv1")
    assert inner.producers == ["layer2.0.conv1"] and inner.prunable
    # the classifier reads the last stream and is never pruned
    assert not _group_of(g, "fc").prunable
    reads = [r for r in g.reads if r.module == "fc"]
    assert len(reads) == 1 and reads[0].group == _group_of(g, "layer4.0.conv2").id


def test_flatten_factor_into_linear():
    g = analyse(get_model("lenet5", in_channels=1, image_size=28), torch.randn(2, 1, 28, 28))
    (r,) = [r for r in g.reads if r.module == "fc1"]
    assert (r.length, r.factor) == (16, 25)  # 16 channels of 5x5 maps


class Gated(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3)
        self.b = nn.Conv2d(4, 4, 3)
        self.g = nn.Conv2d(4, 4, 3, groups=2)
        self.c = nn.Conv2d(4, 4, 1)

    def forward(self, x):
        x = torch.sigmoid(self.a(x))  # sigmoid(0) != 0: a pruned channel is not zero after it
        return self.c(self.g(self.b(x))).mean((2, 3))


def test_unsafe_operations_make_channels_unprunable():
    g = analyse(Gated(), torch.randn(2, 3, 12, 12))
    assert not _group_of(g, "a").prunable  # sigmoid
    assert not _group_of(g, "c").prunable  # the model's output


def test_grouped_convolution_prunes_within_groups():
    g = analyse(Gated(), torch.randn(2, 3, 12, 12))
    # 2 groups of 2 input and 2 output channels: unit i is channel i of both groups, on the
    # input side tied to the producer b, on the output side g's own
    inp, out = _group_of(g, "b"), _group_of(g, "g")
    assert inp.producers == ["b"] and out.producers == ["g"]
    assert inp.prunable and out.prunable and inp.size == out.size == 2
    assert inp.tiles == {"b": 2} and out.tiles == {"g": 2} and not inp.expand
    (r,) = [r for r in g.reads if r.module == "g"]  # g's 2 weight columns are the units
    assert (r.group, r.length, r.factor, r.tiles) == (inp.id, 2, 1, 1)
    (r,) = [r for r in g.reads if r.module == "c"]  # c's columns 0..3 are units 0, 1, 0, 1
    assert (r.group, r.length, r.factor, r.tiles) == (out.id, 2, 1, 2)


def test_grouped_convolution_with_one_input_per_group_prunes_whole_groups():
    class Mult(nn.Module):
        def __init__(self):
            super().__init__()
            self.b = nn.Conv2d(3, 4, 3)
            self.g = nn.Conv2d(4, 8, 3, groups=4)  # one input, two outputs per group
            self.c = nn.Conv2d(8, 4, 1)

        def forward(self, x):
            return self.c(self.g(self.b(x))).mean((2, 3))

    g = analyse(Mult(), torch.randn(2, 3, 12, 12))
    grp = _group_of(g, "g")
    assert set(grp.producers) == {"b", "g"} and grp.prunable and grp.size == 4
    assert grp.rows("b") == 1 and grp.rows("g") == 2 and not grp.tiles


def test_depthwise_follows_its_input():
    class DW(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 8, 1)
            self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
            self.bn = nn.BatchNorm2d(8)
            self.b = nn.Conv2d(8, 2, 1)

        def forward(self, x):
            return self.b(torch.relu(self.bn(self.dw(self.a(x)))))

    g = analyse(DW(), torch.randn(2, 3, 8, 8))
    grp = _group_of(g, "a")
    assert grp.prunable
    assert {(m.module, m.kind, m.origin) for m in grp.members} == {
        ("dw", "depthwise", "a"), ("bn", "norm", "a")}
    assert "dw" not in g.producer_group


def test_attention_with_a_bias_per_head_keeps_its_heads():
    class Biased(nn.Module):
        def __init__(self, per_head):
            super().__init__()
            self.qkv = nn.ModuleList(nn.Linear(8, 8) for _ in range(3))
            self.bias = nn.Parameter(torch.randn(2 if per_head else 1, 5, 5))
            self.proj = nn.Linear(8, 8)
            self.head = nn.Linear(8, 2)

        def forward(self, x):
            # head size 4, the head count from the width (a narrower model runs)
            q, k, v = (f(x).view(2, 5, -1, 4).transpose(1, 2) for f in self.qkv)
            o = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=self.bias)
            return self.head(self.proj(o.transpose(1, 2).reshape(2, 5, -1)).mean(1))

    x = torch.randn(2, 5, 8)
    g = analyse(Biased(False), x)  # one bias for every head: heads are units
    assert _group_of(g, "qkv.0").prunable and _group_of(g, "qkv.0").size == 2
    g = analyse(Biased(True), x)  # a bias per head would need narrowing with them
    assert not _group_of(g, "qkv.0").prunable


def test_addcmul_with_per_channel_parameters_slims_exactly():
    class Addcmul(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 6, 3)
            self.w = nn.Parameter(torch.randn(1, 6, 1, 1, dtype=torch.float64))
            self.b = nn.Parameter(torch.randn(1, 6, 1, 1, dtype=torch.float64))
            self.c = nn.Conv2d(6, 2, 1)

        def forward(self, x):
            y = self.a(x)
            return self.c(y + torch.addcmul(self.b, self.w, y)).mean((2, 3))

    import copy

    import sparsepai as sp
    from tests.structured.test_slim import close

    torch.manual_seed(0)
    model, x = Addcmul().double(), torch.randn(2, 3, 8, 8, dtype=torch.float64)
    g = analyse(model, x)
    grp = _group_of(g, "a")
    assert grp.prunable and {m.module for m in grp.members} == {""}  # w and b follow
    masks = {"a": torch.tensor([1, 0, 1, 1, 0, 1], dtype=torch.bool)}
    slim = sp.slim(model, masks)
    assert tuple(slim.w.shape) == (1, 4, 1, 1) and tuple(slim.b.shape) == (1, 4, 1, 1)
    close(slim(x), sp.apply_masks(copy.deepcopy(model), masks)(x))
