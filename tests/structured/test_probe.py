"""The probe of narrowed forwards: channels whose narrowing the model's forward does not follow
(sizes recomputed from another width) stay whole; what it follows is pruned, and the slim
model equals the masked dense one (float64, train and eval)."""

import copy

import pytest
import torch
from torch import nn

import sparsepai as sp
from sparsepai.structured.analysis import analyse
from tests.structured.test_slim import close


def _group_of(graph, name):
    return graph.groups[graph.producer_group[name]]


class Attn(nn.Module):
    """Two-head attention of one query over the tokens (CaiT's class attention). With
    ``from_input`` the head size is the *input's* width over the head count, as CaiT computes
    it: a model with fewer heads but the same input width cannot run, so the heads stay."""

    def __init__(self, from_input):
        super().__init__()
        self.from_input = from_input
        self.num_heads = 2
        self.q, self.k, self.v = (nn.Linear(8, 8) for _ in range(3))
        self.proj = nn.Linear(8, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        B, N, C = x.shape
        q, k, v = self.q(x[:, :1]), self.k(x), self.v(x)
        d = C // self.num_heads if self.from_input else q.shape[-1] // self.num_heads
        q, k, v = (t.reshape(B, t.shape[1], self.num_heads, d).transpose(1, 2)
                   for t in (q, k, v))
        o = nn.functional.scaled_dot_product_attention(q, k, v)
        o = o.transpose(1, 2).reshape(B, 1, -1 if not self.from_input else C)
        return self.head(self.proj(o)[:, 0] + x[:, 0])


def test_heads_whose_size_the_forward_takes_from_the_input_stay_whole():
    x = torch.randn(2, 5, 8, dtype=torch.float64)
    g = analyse(Attn(True).double(), x)
    assert not _group_of(g, "q").prunable
    g = analyse(Attn(False).double(), x)
    assert _group_of(g, "q").prunable and _group_of(g, "q").size == 2


def test_heads_the_forward_follows_slim_exactly():
    torch.manual_seed(0)
    model = Attn(False).double()
    x = torch.randn(2, 5, 8, dtype=torch.float64)
    masks = {n: torch.tensor([True] * 4 + [False] * 4) for n in ("q", "k", "v")}
    slim = sp.slim(model, masks, example_inputs=x)
    dense = sp.apply_masks(copy.deepcopy(model), masks)
    assert slim.num_heads == 1 and slim.q.out_features == 4
    for mode in ("eval", "train"):
        getattr(slim, mode)()
        getattr(dense, mode)()
        with torch.no_grad():
            close(slim(x), dense(x))


def test_masks_for_unfollowed_heads_are_refused():
    model = Attn(True).double()
    x = torch.randn(2, 5, 8, dtype=torch.float64)
    masks = {n: torch.tensor([True] * 4 + [False] * 4) for n in ("q", "k", "v")}
    with pytest.raises(ValueError, match="cannot be pruned"):
        sp.slim(model, masks, example_inputs=x)


class Glu(nn.Module):
    """A packed gated MLP (timm's GluMlp): one projection chunked into value and gate."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(6, 8)
        self.fc2 = nn.Linear(4, 6)
        self.head = nn.Linear(6, 3)

    def forward(self, x):
        a, b = self.fc1(x).chunk(2, dim=-1)
        return self.head(x + self.fc2(a * nn.functional.silu(b)))


def test_chunked_projection_prunes_the_same_channel_of_each_part():
    torch.manual_seed(0)
    model = Glu().double()
    x = torch.randn(3, 6, dtype=torch.float64)
    g = analyse(model, x)
    grp = _group_of(g, "fc1")
    assert grp.prunable and grp.size == 4 and grp.tiles == {"fc1": 2}
    masks = sp.prune(model, "magnitude", 0.5, structured=True, unit="channels", scope="layer",
                     example_inputs=x)
    assert masks["fc1"].view(2, 4)[0].equal(masks["fc1"].view(2, 4)[1])
    slim = sp.slim(model, masks)
    dense = sp.apply_masks(copy.deepcopy(model), masks)
    assert slim.fc1.out_features == 4 and slim.fc2.in_features == 2
    for mode in ("eval", "train"):
        getattr(slim, mode)()
        getattr(dense, mode)()
        with torch.no_grad():
            close(slim(x), dense(x))


class OffMeta(nn.Module):
    """A forward that reads a plain tensor attribute (not a buffer): it cannot run on the meta
    device, so it is not probed and its graph stays as the walk built it."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 6)
        self.b = nn.Linear(6, 2)
        self.offset = torch.zeros(2)

    def forward(self, x):
        return self.b(torch.relu(self.a(x))) + self.offset


def test_a_model_that_does_not_run_on_meta_keeps_its_walked_graph():
    x = torch.randn(3, 4)
    g = analyse(OffMeta(), x)
    assert _group_of(g, "a").prunable
