"""A Llama built on the meta device and materialised per FSDP2 shard (2 gloo processes), as
benchmarks/bench_memory.py --fsdp prunes it (benchmarks/memory_fsdp.py): magnitude, SNIP and
first-order ProsPr masks equal one process's on the same weights (gathered from the shards), the
sharded model is left as it was, the masks come back through DCP, and MaskedAdamW steps on the
shards equal one process's and keep the pruned weights at exactly zero."""

import functools

import pytest
import torch
import torch.distributed as dist

import sparsepai as sp
from tests.dist_helpers import run_ranks

tf = pytest.importorskip("transformers")

WORLD = 2
SPARSITY = 0.8
CASES = [("magnitude", {}), ("snip", {}), ("prospr", {"meta_steps": 2, "first_order": True})]


def _config():  # vocab 101: uneven shards of the (tied) embedding over 2 ranks
    return tf.LlamaConfig(vocab_size=101, hidden_size=32, intermediate_size=48,
                          num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                          max_position_embeddings=64, tie_word_embeddings=True)


def _batches(n):  # the same batches on every rank: one process sees the same mean loss
    g = torch.Generator().manual_seed(3)
    return [(ids, ids) for ids in (torch.randint(0, 101, (2, 12), generator=g)
                                   for _ in range(n))]


def _state(model):
    return [(t.full_tensor() if hasattr(t, "full_tensor") else t).clone()
            for t in list(model.parameters()) + list(model.buffers())]


def _adamw(model, masks, batches):
    from sparsepai.core.loss import cross_entropy

    params = dict(model.named_parameters())
    opt = sp.optim.MaskedAdamW(list(params.values()), [masks.get(n) for n in params], lr=0.01)
    for ids, _ in batches:
        opt.zero_grad()
        cross_entropy(model(input_ids=ids).logits, ids).backward()
        opt.step()
    return params


def _worker(path, rank):
    from benchmarks.memory_fsdp import sharded_llama
    from sparsepai.distributed import load_sharded_masks, save_sharded_masks

    torch.use_deterministic_algorithms(True)
    group = dist.group.WORLD
    model = sharded_llama(_config(), WORLD, rank)
    params = dict(model.named_parameters())
    assert all(p.to_local().numel() < p.numel() for p in params.values() if p.dim() > 1)
    assert all(not b.is_meta for b in model.buffers())
    plain = tf.LlamaForCausalLM(_config())  # one process, the same weights
    plain.load_state_dict({n: p.full_tensor() for n, p in params.items()}, strict=False)
    assert all(torch.equal(p, params[n].full_tensor()) for n, p in plain.named_parameters())
    data = _batches(3)
    before = _state(model)
    for method, opts in CASES:
        got = sp.prune(model, method, SPARSITY, data, group=group, **opts)
        want = sp.prune(plain, method, SPARSITY, data, **opts)
        assert got.keys() == want.keys(), method
        for n, w in want.items():
            assert got[n].placements == params[n].placements, (method, n)
            assert torch.equal(got[n].full_tensor(), w), (method, n)
        assert all(torch.equal(a, b) for a, b in zip(_state(model), before)), method

    save_sharded_masks(path, got)
    back = load_sharded_masks(path, model)
    assert all(torch.equal(back[n].to_local(), m.to_local()) for n, m in got.items())

    sp.apply_masks(model, back)
    sp.apply_masks(plain, want)
    sharded, ref = _adamw(model, back, data), _adamw(plain, want, data)
    for n, m in want.items():
        w = sharded[n].full_tensor()
        assert bool((w[~m] == 0).all()), n
        assert not torch.equal(w, before[list(params).index(n)]), n  # it trained
        torch.testing.assert_close(w, ref[n].detach(), rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed not available")
def test_meta_built_sharded_llama_prunes_like_one_process(tmp_path):
    worker = functools.partial(_worker, str(tmp_path / "masks"))
    assert run_ranks(worker, WORLD, timeout=120) == {r: "ok" for r in range(WORLD)}
