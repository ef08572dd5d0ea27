"""The opt-in ``norm_streams`` approximation: channels whose only obstacle is a layer norm (or
group norm) over them are pruned, the norm narrowed. The slim model then normalises the kept
channels only, so it is not the masked dense model: these tests check it against a narrower
model built by hand, its shapes and counts, and that the default stays exact."""

import copy

import pytest
import torch
from torch import nn

import sparsepai as sp
from sparsepai.structured.analysis import analyse
from tests.structured.test_slim import close


class Tiny(nn.Module):
    """A residual stream of ``width`` channels under layer norms, an MLP of ``hidden``."""

    def __init__(self, width=8, hidden=6):
        super().__init__()
        self.fc_in = nn.Linear(3, width)
        self.ln1 = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)
        self.ln2 = nn.LayerNorm(width)
        self.head = nn.Linear(width, 2)

    def forward(self, x):
        h = self.ln1(self.fc_in(x))
        h = self.ln2(h + self.fc2(torch.relu(self.fc1(h))))
        return self.head(h.mean(1))


def _tiny():
    torch.manual_seed(0)
    model = Tiny().double()
    for ln in (model.ln1, model.ln2):  # affine parameters that matter
        ln.weight.data = torch.rand(8, dtype=torch.float64) + 0.5
        ln.bias.data = torch.randn(8, dtype=torch.float64) * 0.1
    return model, torch.randn(2, 5, 3, dtype=torch.float64)


def _by_hand(model, keep, hid):
    """The narrower Tiny with the kept stream channels ``keep`` and MLP features ``hid``."""
    ref = Tiny(len(keep), len(hid)).double()
    with torch.no_grad():
        ref.fc_in.weight.copy_(model.fc_in.weight[keep])
        ref.fc_in.bias.copy_(model.fc_in.bias[keep])
        for a in ("ln1", "ln2"):
            getattr(ref, a).weight.copy_(getattr(model, a).weight[keep])
            getattr(ref, a).bias.copy_(getattr(model, a).bias[keep])
        ref.fc1.weight.copy_(model.fc1.weight[hid][:, keep])
        ref.fc1.bias.copy_(model.fc1.bias[hid])
        ref.fc2.weight.copy_(model.fc2.weight[keep][:, hid])
        ref.fc2.bias.copy_(model.fc2.bias[keep])
        ref.head.weight.copy_(model.head.weight[:, keep])
        ref.head.bias.copy_(model.head.bias)
    return ref


def test_default_keeps_layer_normed_stream():
    model, x = _tiny()
    graph = analyse(model, x)
    assert not graph.groups[graph.producer_group["fc_in"]].prunable
    assert graph.groups[graph.producer_group["fc1"]].prunable  # the MLP features are


def test_slim_equals_a_narrower_model_built_by_hand():
    model, x = _tiny()
    masks = sp.prune(model, "magnitude", 0.5, structured=True, unit="channels",
                     scope="layer", example_inputs=x, norm_streams=True)
    assert torch.equal(masks["fc_in"], masks["fc2"])  # one stream
    keep, hid = (torch.nonzero(masks[n]).flatten() for n in ("fc_in", "fc1"))
    assert (len(keep), len(hid)) == (4, 3)
    slim = sp.slim(model, masks)
    assert slim.ln1.normalized_shape == (4,) and tuple(slim.ln2.weight.shape) == (4,)
    assert tuple(slim.fc_in.weight.shape) == (4, 3) and slim.head.in_features == 4
    ref = _by_hand(model, keep, hid)
    for mode in ("eval", "train"):
        getattr(slim, mode)()
        getattr(ref, mode)()
        close(slim(x), ref(x))
    # the approximation: the masked dense model normalises over all 8 channels
    dense = sp.apply_masks(copy.deepcopy(model), masks).eval()
    assert not torch.allclose(slim.eval()(x), dense(x), atol=1e-6)


def test_group_norm_prunes_the_same_channels_in_every_group():
    class GN(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3)
            self.gn = nn.GroupNorm(2, 8)
            self.head = nn.Linear(8, 2)

        def forward(self, x):
            return self.head(torch.relu(self.gn(self.conv(x))).mean((2, 3)))

    torch.manual_seed(0)
    model, x = GN().double(), torch.randn(2, 3, 6, 6, dtype=torch.float64)
    assert not analyse(model, x).groups[analyse(model, x).producer_group["conv"]].prunable
    graph = analyse(model, x, norm_streams=True)
    g = graph.groups[graph.producer_group["conv"]]
    assert g.prunable and g.size == 4 and g.tiles == {"conv": 2}
    masks = {"conv": torch.tensor([1, 0, 1, 1] * 2, dtype=torch.bool)}
    slim = sp.slim(model, masks)
    assert (slim.gn.num_groups, slim.gn.num_channels) == (2, 6)
    keep = torch.nonzero(masks["conv"]).flatten()
    ref = copy.deepcopy(model)
    ref.conv, ref.gn, ref.head = nn.Conv2d(3, 6, 3), nn.GroupNorm(2, 6), nn.Linear(6, 2)
    ref = ref.double()
    with torch.no_grad():
        ref.conv.weight.copy_(model.conv.weight[keep])
        ref.conv.bias.copy_(model.conv.bias[keep])
        ref.gn.weight.copy_(model.gn.weight[keep])
        ref.gn.bias.copy_(model.gn.bias[keep])
        ref.head.weight.copy_(model.head.weight[:, keep])
        ref.head.bias.copy_(model.head.bias)
    close(slim(x), ref(x))


def test_bert_hidden_size_pruned():
    tf = pytest.importorskip("transformers")
    c = tf.BertConfig(vocab_size=50, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                      num_attention_heads=4, max_position_embeddings=32, num_labels=3,
                      hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    model = tf.BertForSequenceClassification(c).eval()
    inputs = {"input_ids": torch.randint(0, 50, (2, 7))}
    masks = sp.prune(model, "magnitude", 0.5, structured=True, unit="channels", scope="layer",
                     example_inputs=inputs, norm_streams=True)
    emb = "bert.embeddings.word_embeddings"
    kept = int(masks[emb].sum())
    assert kept == 16 and torch.equal(masks[emb], masks["bert.embeddings.position_embeddings"])
    slim = sp.slim(model, masks)
    assert slim.get_submodule(emb).embedding_dim == kept
    assert slim.bert.embeddings.LayerNorm.normalized_shape == (kept,)
    layer = slim.bert.encoder.layer[1]
    assert layer.attention.self.query.in_features == kept
    assert layer.output.LayerNorm.normalized_shape == (kept,)
    assert layer.output.dense.out_features == kept
    assert slim.classifier.out_features == 3
    for mode in ("eval", "train"):
        out = getattr(slim, mode)()(**inputs).logits
        assert out.shape == (2, 3) and bool(out.isfinite().all())


def test_bad_option():
    model, x = _tiny()
    with pytest.raises(TypeError, match="norm_streams must be a bool"):
        sp.prune(model, "magnitude", 0.5, structured=True, example_inputs=x, norm_streams=1)
    masks = sp.prune(model, "magnitude", 0.5, structured=True, unit="channels",
                     example_inputs=x, norm_streams=True)
    with pytest.raises(ValueError, match="norm_streams=True; pass example_inputs"):
        sp.slim(model, masks, norm_streams=False)
    with pytest.raises(ValueError, match="cannot be pruned"):  # the exact graph refuses them
        sp.slim(model, masks, example_inputs=x)


def test_gpt2_hidden_size_pruned_and_head_stays_tied():
    tf = pytest.importorskip("transformers")
    c = tf.GPT2Config(vocab_size=50, n_embd=32, n_inner=48, n_layer=2, n_head=4, n_positions=32,
                      resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, use_cache=False)
    torch.manual_seed(0)
    model = tf.GPT2LMHeadModel(c).eval()
    inputs = {"input_ids": torch.randint(0, 50, (2, 7))}
    masks = sp.prune(model, "magnitude", 0.5, structured=True, unit="channels", scope="layer",
                     example_inputs=inputs, norm_streams=True)
    kept = int(masks["transformer.wte"].sum())
    assert kept == 16
    slim = sp.slim(model, masks)
    assert slim.lm_head.weight is slim.transformer.wte.weight  # still one tensor
    assert tuple(slim.lm_head.weight.shape) == (50, kept)
    assert slim.transformer.ln_f.normalized_shape == (kept,)
    assert tuple(slim.transformer.h[0].attn.c_attn.weight.shape) == (kept, 48)
    out = slim(**inputs).logits
    assert out.shape == (2, 7, 50) and bool(out.isfinite().all())


def test_convnextv2_grn_hidden_features_pruned():
    """GRN divides each channel's response by their mean over channels: a normalisation, so
    its MLP features are pruned only with norm_streams (its weight and bias narrowed)."""
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = timm.create_model("convnextv2_atto", pretrained=False, num_classes=5).eval()
    x = torch.randn(2, 3, 32, 32)
    fc1 = "stages.0.blocks.0.mlp.fc1"
    assert not analyse(model, x).prunable_groups()  # exact: LayerNorm streams and GRN
    graph = analyse(model, x, norm_streams=True)
    assert graph.groups[graph.producer_group[fc1]].prunable
    masks = sp.prune(model, "magnitude", 0.5, structured=True, unit="channels", scope="layer",
                     example_inputs=x, norm_streams=True)
    slim = sp.slim(model, masks)
    kept = int(masks[fc1].sum())
    assert kept < masks[fc1].numel()
    assert slim.stages[0].blocks[0].mlp.grn.weight.numel() == kept
    for mode in ("eval", "train"):
        out = getattr(slim, mode)()(x)
        assert out.shape == (2, 5) and bool(out.isfinite().all())


def test_llama_rms_norm_stream_equals_a_narrower_llama():
    """An RMS norm's mean of squares is a normalising statistic: with norm_streams Llama's
    residual stream is pruned (embedding, attention and MLP outputs, the norms' weights) and
    the slim model equals a Llama of that hidden size built by hand."""
    tf = pytest.importorskip("transformers")
    kw = dict(vocab_size=50, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=32, head_dim=8)
    torch.manual_seed(0)
    model = tf.LlamaForCausalLM(tf.LlamaConfig(hidden_size=32, **kw)).double().eval()
    for n, p in model.named_parameters():  # norm weights that matter
        if n.endswith("norm.weight"):
            p.data = torch.rand(32, dtype=torch.float64) + 0.5
    inputs = {"input_ids": torch.randint(0, 50, (2, 7))}
    graph = analyse(model, inputs, norm_streams=True)
    stream = graph.groups[graph.producer_group["model.embed_tokens"]]
    assert stream.prunable and "model.layers.1.mlp.down_proj" in stream.producers
    keep = torch.randperm(32)[:20].sort().values
    mask = torch.zeros(32, dtype=torch.bool)
    mask[keep] = True
    slim = sp.slim(model, {p: mask for p in stream.producers})
    assert slim.model.norm.weight.shape == (20,) and slim.lm_head.in_features == 20
    ref = tf.LlamaForCausalLM(tf.LlamaConfig(hidden_size=20, **kw)).double().eval()
    with torch.no_grad():
        for n, p in ref.named_parameters():
            t = dict(model.named_parameters())[n]
            for d in range(t.dim()):
                if t.shape[d] != p.shape[d]:
                    t = t.index_select(d, keep)
            p.copy_(t)
    for mode in ("eval", "train"):
        getattr(slim, mode)()
        getattr(ref, mode)()
        with torch.no_grad():  # the norm computes in float32 (transformers' RMS norm)
            close(slim(**inputs).logits, ref(**inputs).logits, tol=1e-6)
