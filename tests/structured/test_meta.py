"""The structured path on a model built on the meta device (no parameter values, no storage):
the channel graph, ``sp.prune(structured=True)`` with a method that needs no values, and
``sp.slim`` to the narrowed meta model, against the same model with real weights; methods
that need weights say so."""

import pytest
import torch

import sparsepai as sp
from sparsepai.structured.analysis import analyse

tf = pytest.importorskip("transformers")


def _config(**kw):
    base = dict(vocab_size=50, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                max_position_embeddings=32, tie_word_embeddings=True)
    base.update(kw)
    return tf.LlamaConfig(**base)


def _meta_llama(cfg):
    with torch.device("meta"):
        return tf.LlamaForCausalLM(cfg)


def _real_llama(cfg):
    torch.manual_seed(0)
    return tf.LlamaForCausalLM(cfg)


IDS = {"input_ids": torch.randint(0, 50, (2, 7), generator=torch.Generator().manual_seed(1))}


def _n_params(model):
    return sum(p.numel() for p in model.parameters())  # tied parameters counted once


def test_meta_graph_equals_the_real_models():
    cfg = _config()
    meta, real = _meta_llama(cfg), _real_llama(cfg)
    gm, gr = analyse(meta, IDS), analyse(real, IDS)
    assert gm.groups == gr.groups and gm.reads == gr.reads
    assert gm.producer_group == gr.producer_group and gm.sizes == gr.sizes
    heads = gm.groups[gm.producer_group["model.layers.0.self_attn.k_proj"]]
    assert heads.prunable and heads.size == 2  # key/value heads, each with its 2 query heads
    assert heads.expand["model.layers.0.self_attn.q_proj"] == 16
    mlp = gm.groups[gm.producer_group["model.layers.1.mlp.up_proj"]]
    assert mlp.prunable and set(mlp.producers) == {"model.layers.1.mlp.gate_proj",
                                                   "model.layers.1.mlp.up_proj"}
    assert all(p.is_meta for p in meta.parameters())
    assert all(b.is_meta for b in meta.buffers())


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_random_prune_on_meta_equals_the_real_models(scope):
    cfg = _config()
    kw = dict(structured=True, unit="channels", scope=scope, example_inputs=IDS, seed=3)
    got = sp.prune(_meta_llama(cfg), "random", 0.5, **kw)
    want = sp.prune(_real_llama(cfg), "random", 0.5, **kw)
    assert got.keys() == want.keys()
    assert all(torch.equal(got[k], want[k]) for k in got)


def test_slim_of_meta_is_the_narrowed_config():
    cfg = _config(num_hidden_layers=3)
    meta = _meta_llama(cfg)
    masks = sp.prune(meta, "random", 0.5, structured=True, unit="channels", scope="layer",
                     example_inputs=IDS)
    small = sp.slim(meta, masks)
    assert all(p.is_meta for p in small.parameters())
    # uniform per layer: half the key/value heads (with their query heads), half the MLP
    narrowed = _meta_llama(_config(num_hidden_layers=3, num_attention_heads=2,
                                   num_key_value_heads=1, intermediate_size=24))
    assert _n_params(small) == _n_params(narrowed) < _n_params(meta)
    assert {n: p.shape for n, p in small.named_parameters()} == \
        {n: p.shape for n, p in narrowed.named_parameters()}
    # the same masks slim the real model to the same shapes
    real = sp.slim(_real_llama(_config(num_hidden_layers=3)), masks)
    assert {n: p.shape for n, p in small.named_parameters()} == \
        {n: p.shape for n, p in real.named_parameters()}
    # materialised (to_empty + the user's init), it runs and trains
    small.to_empty(device="cpu")
    torch.manual_seed(0)
    small.apply(small._init_weights)
    # a buffer computed at construction: built again, as after any to_empty
    small.model.rotary_emb = type(real.model.rotary_emb)(config=small.config)
    out = small(**IDS).logits
    assert out.shape == (2, 7, 50) and bool(torch.isfinite(out).all())
    out.float().pow(2).mean().backward()
    assert small.model.layers[0].mlp.up_proj.weight.grad is not None


@pytest.mark.parametrize("method", ["magnitude", "snip", "prospr"])
def test_methods_that_need_weights_say_so(method):
    meta = _meta_llama(_config())
    with pytest.raises(ValueError) as e:
        sp.prune(meta, method, 0.5, structured=True, example_inputs=IDS)
    msg = str(e.value)
    assert msg.startswith("prune: the model is on the meta device") and len(msg.splitlines()) == 1
    assert f"scores real weights on an example (method {method!r})" in msg
    assert "only 'random' runs" in msg
