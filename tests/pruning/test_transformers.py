"""Every method on tiny Hugging Face transformers built from configs (nothing downloaded), in
float64: Llama (grouped-query attention, token ids in a dict), GPT-2 (``Conv1D`` layers, tied
head), BERT (sequence classification) and ViT (pixel values as a positional tuple). Exact kept
counts, the user's model untouched, and scores against independent computations: SNIP from a
plain autograd pass, GraSP from a plain double backward, ProsPr's meta-gradient by finite
differences through SDPA attention, SynFlow's data-free input in embedding space."""

import copy

import pytest
import torch
import torch.nn.functional as F

import sparsepai as sp

transformers = pytest.importorskip("transformers")

VOCAB, CLASSES = 100, 3
METHODS = [("random", {}), ("magnitude", {}), ("snip", {}), ("grasp", {}),
           ("synflow", {"rounds": 3}), ("force", {"iterations": 3}),
           ("prospr", {"meta_steps": 1}), ("prospr", {"meta_steps": 1, "first_order": True})]
IDS = [m + ("-fo" if o.get("first_order") else "") for m, o in METHODS]


def llama():
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64,
                                   num_hidden_layers=2, num_attention_heads=4,
                                   num_key_value_heads=2, max_position_embeddings=64,
                                   attn_implementation="sdpa")
    return transformers.LlamaForCausalLM(cfg).double()


def gpt2():
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=64,
                                  resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                                  bos_token_id=0, eos_token_id=0)
    return transformers.GPT2LMHeadModel(cfg).double()


def bert():
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2,
                                  num_attention_heads=4, intermediate_size=64,
                                  max_position_embeddings=64, num_labels=CLASSES,
                                  hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return transformers.BertForSequenceClassification(cfg).double()


def vit():
    torch.manual_seed(0)
    cfg = transformers.ViTConfig(image_size=16, patch_size=8, num_channels=3, hidden_size=32,
                                 num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                                 num_labels=CLASSES, hidden_dropout_prob=0.0,
                                 attention_probs_dropout_prob=0.0)
    return transformers.ViTForImageClassification(cfg).double()


def token_data(n, lm, seed=1):
    """Dict inputs; targets are next-token ids (B, T) for a language model, labels (B,) else."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids = torch.randint(0, VOCAB, (2, 8), generator=g)
        y = (torch.randint(0, VOCAB, (2, 8), generator=g) if lm else
             torch.randint(0, CLASSES, (2,), generator=g))
        out.append(({"input_ids": ids, "attention_mask": torch.ones_like(ids)}, y))
    return out


def image_data(n, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [((torch.randn(2, 3, 16, 16, generator=g, dtype=torch.float64),),
             torch.randint(0, CLASSES, (2,), generator=g)) for _ in range(n)]


MODELS = {"llama": (llama, lambda n: token_data(n, True)),
          "gpt2": (gpt2, lambda n: token_data(n, True)),
          "bert": (bert, lambda n: token_data(n, False)),
          "vit": (vit, image_data)}


@pytest.mark.parametrize("method,opts", METHODS, ids=IDS)
@pytest.mark.parametrize("arch", list(MODELS))
def test_every_method_on_every_transformer(arch, method, opts):
    build, data = MODELS[arch]
    model = build()
    model.train()
    flags = [p.requires_grad for p in model.parameters()]
    before = copy.deepcopy(model.state_dict())
    names = sp.pruning.prunable_names(model)
    params = dict(model.named_parameters())
    n = sum(params[k].numel() for k in names)
    masks = sp.prune(model, method, 0.7, data(2), **opts)
    assert list(masks) == names
    assert sum(int(m.sum()) for m in masks.values()) == n - round(0.7 * n)
    assert all(m.dtype == torch.bool and m.shape == params[k].shape for k, m in masks.items())
    # the user's model is untouched: weights, buffers, flags, mode, dtype, gradients
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert [p.requires_grad for p in model.parameters()] == flags and model.training
    assert all(p.grad is None and p.dtype == torch.float64 for p in model.parameters())


def test_default_prunable_weights_of_each_architecture():
    gpt = sp.pruning.prunable_names(gpt2())
    # GPT-2's Conv1D layers; its head is tied to the token embedding, which is never pruned
    assert gpt == [f"transformer.h.{i}.{m}.weight" for i in range(2)
                   for m in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")]
    lla = sp.pruning.prunable_names(llama())
    assert "lm_head.weight" in lla and "model.embed_tokens.weight" not in lla
    assert len(lla) == 2 * 7 + 1
    assert "vit.embeddings.patch_embeddings.projection.weight" in sp.pruning.prunable_names(vit())


def test_snip_on_gpt2_equals_a_plain_autograd_pass():
    model, data = gpt2(), token_data(2, True)
    got = sp.score(model, "snip", data, batches=2)
    names = list(got)
    params = dict(model.named_parameters())
    total = [torch.zeros_like(params[n]) for n in names]
    for x, y in data:
        logits = model(**x).logits
        loss = F.cross_entropy(logits.reshape(-1, VOCAB), y.reshape(-1))
        for t, g in zip(total, torch.autograd.grad(loss, [params[n] for n in names])):
            t += g
    for n, g in zip(names, total):
        torch.testing.assert_close(got[n], (g * params[n]).abs().detach(), rtol=1e-10, atol=1e-14)


def test_grasp_on_llama_equals_a_plain_hessian_gradient_product():
    from torch.nn.attention import SDPBackend, sdpa_kernel

    data = token_data(1, True)
    ref = llama()
    got = sp.score(ref, "grasp", data, temperature=5.0)
    params = dict(ref.named_parameters())
    w = [params[n] for n in got]
    (x, y), = data

    def loss():
        return F.cross_entropy(ref(**x).logits.reshape(-1, VOCAB) / 5.0, y.reshape(-1))

    # (HF's eager attention takes its softmax in float32, so the float64 oracle is SDPA's math
    # kernel, which has a double backward)
    with sdpa_kernel([SDPBackend.MATH]):
        g = [t.detach() for t in torch.autograd.grad(loss(), w)]
        grads = torch.autograd.grad(loss(), w, create_graph=True)
        hg = torch.autograd.grad(sum((a * b).sum() for a, b in zip(grads, g)), w)
    for n, wi, h in zip(got, w, hg):
        torch.testing.assert_close(got[n], (wi * h).detach(), rtol=1e-9, atol=1e-15)
        assert bool((got[n] != 0).any())


def test_prospr_meta_gradient_through_attention_by_finite_differences():
    # GPT-2 is float64 end to end (HF's Llama takes its RMS norm in float32: too coarse for
    # finite differences)
    model, data = gpt2(), token_data(2, True)
    name = "transformer.h.0.attn.c_attn.weight"
    got = sp.score(model, "prospr", data, meta_steps=1, inner_lr=0.5, first_order=False)[name]

    def meta_loss(entry, h):
        m = copy.deepcopy(model)
        with torch.no_grad():
            dict(m.named_parameters())[name][entry] *= 1 + h  # c = 1 + h on one entry
        opt = torch.optim.SGD(m.parameters(), lr=0.5)
        (x0, y0), (x1, y1) = data
        F.cross_entropy(m(**x0).logits.reshape(-1, VOCAB), y0.reshape(-1)).backward()
        opt.step()
        with torch.no_grad():
            return F.cross_entropy(m(**x1).logits.reshape(-1, VOCAB), y1.reshape(-1)).item()

    entries = [(0, 0), (5, 7), tuple((got == got.max()).nonzero()[0].tolist())]
    for entry in entries:
        h = 1e-4
        fd = (meta_loss(entry, h) - meta_loss(entry, -h)) / (2 * h)
        assert abs(abs(fd) - got[entry].item()) <= 1e-4 * got.max().item(), entry


class TokenModel(torch.nn.Module):
    """Embedding -> LayerNorm -> Linear -> mean over tokens -> Linear."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.emb = torch.nn.Embedding(VOCAB, 6)
        self.norm = torch.nn.LayerNorm(6)
        self.fc = torch.nn.Linear(6, 5)
        self.head = torch.nn.Linear(5, CLASSES)
        with torch.no_grad():
            self.norm.weight.uniform_(-2, 2)
            self.norm.bias.uniform_(-1, 1)
        self.double()

    def forward(self, input_ids, attention_mask=None):
        return self.head(torch.relu(self.fc(self.norm(self.emb(input_ids)))).mean(1))


def test_synflow_input_is_all_ones_in_embedding_space():
    model = TokenModel()
    seen = []
    model.emb.register_forward_pre_hook(lambda m, a: seen.append(a[0].dtype))
    data = token_data(1, False)
    got = sp.score(model, "synflow", data)
    assert set(got) == {"fc.weight", "head.weight"}
    # by hand: embedding outputs ones, the layer norm its |affine| part, every weight |w|
    h = torch.ones(6, dtype=torch.float64) * model.norm.weight.abs() + model.norm.bias.abs()
    a = model.fc.weight.abs() @ h + model.fc.bias.abs()
    # R = sum(|W_head| relu(a)); relu(a) = a (positive)
    want_head = model.head.weight.abs() * a
    want_fc = model.fc.weight.abs() * (model.head.weight.abs().sum(0)[:, None] * h[None, :])
    torch.testing.assert_close(got["head.weight"], want_head.detach(), rtol=1e-12, atol=0)
    torch.testing.assert_close(got["fc.weight"], want_fc.detach(), rtol=1e-12, atol=0)
    # token ids, never floats, reach the embedding (the hook is copied with the model)
    assert seen and all(not d.is_floating_point for d in seen)
    # without data: the example's structure from example_inputs
    alone = sp.score(model, "synflow", example_inputs=torch.zeros(3, 4, dtype=torch.long))
    for n in got:
        torch.testing.assert_close(alone[n], got[n], rtol=1e-12, atol=0)


@pytest.mark.parametrize("arch", ["gpt2", "bert"])
def test_synflow_flow_reaches_every_layer_of_layer_norm_transformers(arch):
    # a normalised all-ones vector is zero: without the affine treatment of layer norm every
    # score of these models would be 0
    build, data = MODELS[arch]
    scores = sp.score(build(), "synflow", data(1))
    assert all(bool((s > 0).any()) for s in scores.values())
    assert all(bool(torch.isfinite(s).all()) for s in scores.values())
