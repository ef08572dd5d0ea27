"""The operator-level graph on transformers built from small configs (nothing downloaded):
MLP hidden features are pruned (Llama's gate and up projections together), attention heads are
pruned whole (with grouped-query attention, a key/value head with its query heads), the
residual stream that layer/RMS norms mix is left whole. Float64: slim equals the masked dense
model."""

import copy

import pytest
import torch

import sparsepai as sp
from sparsepai.structured.analysis import analyse
from tests.structured.test_slim import close

tf = pytest.importorskip("transformers")
timm = pytest.importorskip("timm")


def _llama():
    c = tf.LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32)
    return tf.LlamaForCausalLM(c), {"input_ids": torch.randint(0, 50, (2, 7))}


def _bert():
    c = tf.BertConfig(vocab_size=50, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                      num_attention_heads=4, max_position_embeddings=32, num_labels=3,
                      hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return tf.BertForSequenceClassification(c), {
        "input_ids": torch.randint(0, 50, (2, 7)),
        "attention_mask": torch.tensor([[1] * 7, [1] * 5 + [0] * 2])}


def _hf_vit():
    c = tf.ViTConfig(image_size=16, patch_size=4, hidden_size=32, intermediate_size=48,
                     num_hidden_layers=2, num_attention_heads=4, num_labels=3,
                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return tf.ViTForImageClassification(c), {"pixel_values": torch.randn(2, 3, 16, 16)}


def _gpt2():
    c = tf.GPT2Config(vocab_size=50, n_embd=32, n_inner=48, n_layer=2, n_head=4, n_positions=32,
                      resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, use_cache=False)
    return tf.GPT2LMHeadModel(c), {"input_ids": torch.randint(0, 50, (2, 7))}


def _timm_vit():
    m = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8,
                          num_classes=3, depth=2)
    return m, torch.randn(2, 3, 32, 32)


# name -> (builder, one MLP's producers that must form one prunable group)
MODELS = {
    "llama": (_llama, {"model.layers.0.mlp.gate_proj", "model.layers.0.mlp.up_proj"}),
    "bert": (_bert, {"bert.encoder.layer.0.intermediate.dense"}),
    "hf_vit": (_hf_vit, {"vit.layers.0.mlp.fc1"}),
    "gpt2": (_gpt2, {"transformer.h.0.mlp.c_fc"}),  # Conv1D: weight (in, out), addmm
    "timm_vit": (_timm_vit, {"blocks.0.mlp.fc1"}),
}


def _logits(out):
    """The logits of a tensor, tuple or ModelOutput (a local helper: see sparsepai.pruning)."""
    if hasattr(out, "logits"):
        return out.logits
    return out[0] if isinstance(out, (tuple, list)) else out


def _run(model, inputs):
    return _logits(model(**inputs) if isinstance(inputs, dict) else model(inputs))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_transformer_mlp_features_slim_equals_masked_dense(name):
    build, mlp = MODELS[name]
    torch.manual_seed(0)
    model, inputs = build()
    model = model.double().eval()
    if isinstance(inputs, dict):
        inputs = {k: v.double() if v.is_floating_point() else v for k, v in inputs.items()}
    else:
        inputs = inputs.double()
    before = copy.deepcopy(model.state_dict())
    masks = sp.prune(model, "magnitude", 0.3, structured=True, example_inputs=inputs)
    graph = analyse(model)
    groups = {frozenset(g.producers) for g in graph.prunable_groups()}
    assert frozenset(mlp) in groups
    first = next(iter(mlp))
    assert not bool(masks[first].all())  # the MLP lost features
    slim = sp.slim(model, masks)
    dense = sp.apply_masks(copy.deepcopy(model), masks)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert sum(p.numel() for p in slim.parameters()) < sum(p.numel() for p in model.parameters())
    for mode in ("eval", "train"):
        getattr(slim, mode)()
        getattr(dense, mode)()
        with torch.no_grad():
            close(_run(slim, inputs), _run(dense, inputs))


# name -> (attention projections of layer 0, rows per unit of each: query, key, value,
#          the module whose head-count attributes slim updates, its attributes before)
HEADS = {
    # 4 query heads of 8 features share 2 key/value heads: 2 units of 2 query heads
    "llama": ({"model.layers.0.self_attn.q_proj": 16, "model.layers.0.self_attn.k_proj": 8,
               "model.layers.0.self_attn.v_proj": 8}, "model.layers.0.self_attn", {}),
    "bert": ({f"bert.encoder.layer.0.attention.self.{n}": 8 for n in ("query", "key", "value")},
             "bert.encoder.layer.0.attention.self",
             {"num_attention_heads": 4, "all_head_size": 32}),
    "hf_vit": ({f"vit.layers.0.attention.{n}_proj": 8 for n in "qkv"},
               "vit.layers.0.attention", {"num_attention_heads": 4}),
}


def _unit_masks(graph, drop=0):
    """Every prunable group loses its unit ``drop`` (a head, or a feature of an MLP)."""
    out = {}
    for g in graph.prunable_groups():
        keep = torch.ones(g.size, dtype=torch.bool)
        keep[drop] = False
        for p in g.producers:
            out[p] = g.spread(p, keep)
    return out


@pytest.mark.parametrize("name", sorted(HEADS))
def test_attention_heads_pruned_whole(name):
    build, _ = MODELS[name]
    rows, owner, attrs = HEADS[name]
    torch.manual_seed(0)
    model, inputs = build()
    model = model.double().eval()
    inputs = {k: v.double() if v.is_floating_point() else v for k, v in inputs.items()}
    graph = analyse(model, inputs)
    g = graph.groups[graph.producer_group[next(iter(rows))]]
    assert set(g.producers) == set(rows) and g.prunable
    assert {p: g.rows(p) for p in g.producers} == rows
    o_proj = [r for r in graph.reads if r.group == g.id]
    assert len(o_proj) == 1 and o_proj[0].factor == max(rows.values())
    masks = _unit_masks(graph)
    slim = sp.slim(model, masks)
    dense = sp.apply_masks(copy.deepcopy(model), masks)
    mod = slim.get_submodule(owner)
    for a, n in attrs.items():  # one unit of g.size gone
        assert getattr(mod, a) == n * (g.size - 1) // g.size, a
    for p, e in rows.items():
        assert slim.get_submodule(p).out_features == e * (g.size - 1)
    for mode in ("eval", "train"):
        getattr(slim, mode)()
        getattr(dense, mode)()
        with torch.no_grad():
            close(_run(slim, inputs), _run(dense, inputs))
    # a mask that keeps part of a head is refused; the model is unchanged
    before = copy.deepcopy(model.state_dict())
    bad = dict(masks)
    q = next(iter(rows))
    bad[q] = masks[q].clone()
    bad[q][0] = True
    with pytest.raises(ValueError, match="splits an attention head"):
        sp.slim(model, bad)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_gpt2_fused_qkv_heads_pruned_whole():
    """GPT-2's Conv1D c_attn writes query, key and value (split by ``split_size``): head ``h``
    is rows ``h*D..`` of each third; slim narrows c_attn, c_proj's inputs, ``num_heads`` and
    ``split_size``, and equals the masked dense model."""
    torch.manual_seed(0)
    model, inputs = _gpt2()
    model = model.double().eval()
    graph = analyse(model, inputs)
    attn = "transformer.h.0.attn"
    g = graph.groups[graph.producer_group[f"{attn}.c_attn"]]
    assert g.prunable and g.producers == [f"{attn}.c_attn"] and g.size == 4
    assert g.rows(f"{attn}.c_attn") == 8 and g.tiles == {f"{attn}.c_attn": 3}
    assert (attn, "split_size", g.id) in graph.sizes
    (read,) = [r for r in graph.reads if r.module == f"{attn}.c_proj"]
    assert (read.group, read.factor) == (g.id, 8)
    masks = _unit_masks(graph)  # every group loses its unit 0: head 0, MLP feature 0
    assert masks[f"{attn}.c_attn"].view(3, 4, 8)[:, 0].logical_not().all()
    slim = sp.slim(model, masks)
    dense = sp.apply_masks(copy.deepcopy(model), masks)
    mod = slim.get_submodule(attn)
    assert (mod.num_heads, mod.split_size) == (3, 24)
    assert slim.lm_head.weight is slim.transformer.wte.weight  # narrowing keeps the tie
    assert tuple(mod.c_attn.weight.shape) == (32, 72) and mod.c_attn.nf == 72
    assert tuple(mod.c_proj.weight.shape) == (24, 32)
    mlp = slim.get_submodule("transformer.h.0.mlp")
    assert tuple(mlp.c_fc.weight.shape) == (32, 47) and tuple(mlp.c_proj.weight.shape) == (47, 32)
    for mode in ("eval", "train"):
        getattr(slim, mode)()
        getattr(dense, mode)()
        with torch.no_grad():
            close(_run(slim, inputs), _run(dense, inputs))


def test_timm_fused_qkv_heads_pruned_whole():
    """timm's Attention: one qkv Linear reshaped to (B, N, 3, H, D) and unbound: head ``h`` is
    rows ``h*D..`` of each third; slim narrows qkv, proj's inputs, ``num_heads`` and
    ``attn_dim``, and equals the masked dense model."""
    torch.manual_seed(0)
    model, x = _timm_vit()
    model, x = model.double().eval(), x.double()
    graph = analyse(model, x)
    qkv = "blocks.0.attn.qkv"
    g = graph.groups[graph.producer_group[qkv]]
    heads, hd = model.blocks[0].attn.num_heads, model.blocks[0].attn.head_dim
    assert g.prunable and g.producers == [qkv] and g.size == heads
    assert g.rows(qkv) == hd and g.tiles == {qkv: 3}
    masks = _unit_masks(graph)
    slim = sp.slim(model, masks)
    dense = sp.apply_masks(copy.deepcopy(model), masks)
    attn = slim.blocks[0].attn
    assert (attn.num_heads, attn.attn_dim) == (heads - 1, (heads - 1) * hd)
    assert attn.qkv.out_features == 3 * (heads - 1) * hd
    assert attn.proj.in_features == (heads - 1) * hd
    for mode in ("eval", "train"):
        getattr(slim, mode)()
        getattr(dense, mode)()
        with torch.no_grad():
            close(_run(slim, x), _run(dense, x))
