"""Users' own training loops after pruning at initialization (docs/guides/training-loops.md):
the Hugging Face ``Trainer`` with ``sp.optim.MaskedAdamW`` passed through ``optimizers=``, and a
plain loop over a ``torch.compile``d model with ``sp.optim.MaskedSGD``."""

import copy

import pytest
import torch

import sparsepai as sp
from tests.tiny_nets import convnet

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")  # the Trainer needs it


def tiny_bert(seed=0):
    torch.manual_seed(seed)
    cfg = transformers.BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2,
                                  num_attention_heads=2, intermediate_size=64,
                                  max_position_embeddings=16, num_labels=2)
    return transformers.BertForSequenceClassification(cfg)


class TokenDataset(torch.utils.data.Dataset):
    """Sequences whose label is whether token 1 occurs in them: learnable, and tiny."""

    def __init__(self, n=64, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(2, 64, (n, 12), generator=g)
        self.ids[: n // 2, 5] = 1
        self.labels = (self.ids == 1).any(1).long()

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "labels": self.labels[i]}


def test_trainer_with_masked_adamw_keeps_pruned_weights_zero(tmp_path):
    model, ds = tiny_bert(), TokenDataset()
    batches = [({"input_ids": ds.ids[i:i + 16]}, ds.labels[i:i + 16]) for i in range(0, 64, 16)]
    masks = sp.prune(model, "snip", 0.8, batches, min_per_layer=64)
    sp.apply_masks(model, masks)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = sp.optim.MaskedAdamW(model.named_parameters(), None, lr=3e-3)
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path), max_steps=6, per_device_train_batch_size=16, use_cpu=True,
        report_to=[], save_strategy="no", logging_strategy="no", disable_tqdm=True, seed=0)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=ds,
                                   optimizers=(opt, None))
    trainer.train()

    assert trainer.optimizer is opt or getattr(trainer.optimizer, "optimizer", None) is opt
    assert opt.state and all(s["step"] == 6 for s in opt.state.values())
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        p = params[name]
        assert (p[~mask] == 0).all(), name                   # pruned: exactly zero
        assert not torch.equal(p[mask], before[name][mask]), name   # kept: trained
        state = opt.state[p]
        for key in ("exp_avg", "exp_avg_sq"):
            dense = state[key] if state[key].shape == p.shape else None
            if dense is not None:
                assert (dense[~mask] == 0).all(), (name, key)
    # unmasked parameters (embeddings, norms, biases) trained as AdamW trains them
    assert not torch.equal(params["bert.embeddings.word_embeddings.weight"],
                           before["bert.embeddings.word_embeddings.weight"])


def _train(model, batches, compiled):
    opt = sp.optim.MaskedSGD(model.named_parameters(), None, lr=0.05, momentum=0.9,
                             path="dense")
    step_model = torch.compile(model) if compiled else model
    for xb, yb in batches:
        opt.zero_grad()
        torch.nn.functional.cross_entropy(step_model(xb), yb).backward()
        opt.step()
    return model


def test_compiled_loop_trains_like_eager_and_keeps_pruned_weights_zero():
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(16, 1, 8, 8, generator=g), torch.randint(0, 10, (16,), generator=g))
               for _ in range(4)]
    model = convnet()
    masks = sp.prune(model, "snip", 0.8, batches)
    sp.apply_masks(model, masks)
    twin = copy.deepcopy(model)
    sp.apply_masks(twin, masks)

    compiled = _train(model, batches, compiled=True)
    eager = _train(twin, batches, compiled=False)

    c, e = dict(compiled.named_parameters()), dict(eager.named_parameters())
    for name, mask in masks.items():
        assert (c[name][~mask] == 0).all(), name
    for name in c:  # the compiled forward/backward is the eager one, to float32 rounding
        torch.testing.assert_close(c[name], e[name], rtol=1e-4, atol=1e-5)
    assert any(not torch.equal(c[n], p) for n, p in convnet().named_parameters())
