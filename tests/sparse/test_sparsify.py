"""sp.sparsify: same outputs and gradients as the masked dense model, training with MaskedSGD
and torch.optim tracks masked dense training, state dict round trip, the report, bad input."""

import copy

import pytest
import torch

import sparsepai as sp
from sparsepai._ext import has_op
from sparsepai.sparse import SparseConv2d, SparseLinear, densify, sparsify

needs_op = pytest.mark.skipif(not has_op("sparse_conv2d", "cpu"),
                              reason="compiled extension not built")


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = torch.nn.Conv2d(3, 16, 3, padding=1)
        self.c2 = torch.nn.Conv2d(16, 32, 3, stride=2, padding=1, bias=False)
        self.bn = torch.nn.BatchNorm2d(32)
        self.c3 = torch.nn.Conv2d(32, 32, 3, padding=1)
        self.fc = torch.nn.Linear(32, 10)

    def forward(self, x):
        x = torch.relu(self.c1(x))
        x = torch.relu(self.bn(self.c2(x)))
        x = torch.relu(self.c3(x))
        return self.fc(x.mean((2, 3)))


def masked_net(dtype=torch.float64, seed=0, density=0.1):
    torch.manual_seed(seed)
    net = Net().to(dtype)
    g = torch.Generator().manual_seed(seed + 1)
    masks = {n: torch.rand(p.shape, generator=g) < (0.5 if n == "c1.weight" else density)
             for n, p in net.named_parameters() if p.dim() > 1}
    sp.apply_masks(net, masks)
    return net, masks


def data(dtype, n=8, seed=2):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 12, 12, generator=g, dtype=dtype), torch.randint(0, 10, (n,),
                                                                                 generator=g)


def force_sparse(model):
    for m in model.modules():
        if isinstance(m, (SparseConv2d, SparseLinear)):
            m.mode = "sparse"
    return model


@needs_op
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_outputs_and_gradients_equal_masked_dense(dtype):
    dense, masks = masked_net(dtype)
    sparse = force_sparse(sparsify(copy.deepcopy(dense), masks))
    assert isinstance(sparse.c2, SparseConv2d) and isinstance(sparse.fc, SparseLinear)
    assert isinstance(sparse.c1, torch.nn.Conv2d) and not isinstance(sparse.c1, SparseConv2d)
    x, y = data(dtype)
    tol = dict(atol=1e-12, rtol=1e-12) if dtype == torch.float64 else dict(atol=1e-5, rtol=1e-5)
    for mode in ("train", "eval"):
        getattr(dense, mode)()
        getattr(sparse, mode)()
        xd, xs = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
        ld = torch.nn.functional.cross_entropy(dense(xd), y)
        ls = torch.nn.functional.cross_entropy(sparse(xs), y)
        torch.testing.assert_close(ls, ld, **tol)
        dense.zero_grad()
        sparse.zero_grad()
        ld.backward()
        ls.backward()
        torch.testing.assert_close(xs.grad, xd.grad, **tol)
        for name in ("c2", "c3", "fc"):
            dm, sm = getattr(dense, name), getattr(sparse, name)
            torch.testing.assert_close(sm.values.grad, dm.weight.grad.reshape(-1)[sm.index],
                                       **tol)
            if dm.bias is not None:
                torch.testing.assert_close(sm.bias.grad, dm.bias.grad, **tol)


@needs_op
@pytest.mark.parametrize("dtype, rtol", [(torch.float64, 1e-10), (torch.float32, 1e-4)])
def test_100_masked_sgd_steps_track_masked_dense_training(dtype, rtol):
    dense, _ = masked_net(dtype)
    sparse = force_sparse(sparsify(copy.deepcopy(dense)))
    opts = [sp.optim.MaskedSGD(m.named_parameters(), masks=None, lr=0.05, momentum=0.9,
                               weight_decay=1e-4) for m in (dense, sparse)]
    x, y = data(dtype, n=16)
    losses = ([], [])
    for _ in range(100):
        for model, opt, out in zip((dense, sparse), opts, losses):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            out.append(loss.item())
    assert losses[0][-1] < losses[0][0] * 0.9  # it trained
    torch.testing.assert_close(torch.tensor(losses[1]), torch.tensor(losses[0]), rtol=rtol,
                               atol=0)
    # pruned weights stayed pruned
    assert bool((sparse.state_dict()["c3.weight"][~dense.c3.weight._sparsepai_mask] == 0).all())


@needs_op
def test_torch_optim_adam_tracks_masked_dense():
    dense, _ = masked_net(torch.float64)
    sparse = force_sparse(sparsify(copy.deepcopy(dense), min_sparsity=0.0))
    assert isinstance(sparse.c1, SparseConv2d)
    # plain Adam moves pruned weights of the dense model: compare against MaskedAdamW instead
    od = sp.optim.MaskedAdamW(dense.named_parameters(), masks=None, lr=1e-3, weight_decay=0)
    os_ = torch.optim.Adam(sparse.parameters(), lr=1e-3)
    x, y = data(torch.float64)
    for _ in range(10):
        for model, opt in ((dense, od), (sparse, os_)):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    torch.testing.assert_close(sparse.state_dict()["c3.weight"], dense.state_dict()["c3.weight"],
                               atol=1e-10, rtol=1e-8)


@needs_op
def test_state_dict_round_trip_and_densify():
    dense, masks = masked_net(torch.float32)
    sparse = sparsify(copy.deepcopy(dense), masks)
    sd = sparse.state_dict()
    ref = dense.state_dict()
    assert list(sd) == list(ref)
    for k in ref:
        assert sd[k].shape == ref[k].shape
        torch.testing.assert_close(sd[k], ref[k])
    # into a fresh dense model and back into a sparse one holding other values
    fresh = Net()
    fresh.load_state_dict(sd)
    other, _ = masked_net(torch.float32, seed=5)
    other = sparsify(other, masks)
    other.load_state_dict(fresh.state_dict())
    x, _ = data(torch.float32)
    dense.eval(), other.eval()
    torch.testing.assert_close(other(x), dense(x), atol=1e-5, rtol=1e-5)
    back = densify(other)
    assert type(back.c3) is torch.nn.Conv2d
    assert bool((back.c3.weight._sparsepai_mask == masks["c3.weight"]).all())
    torch.testing.assert_close(back(x), dense(x), atol=1e-5, rtol=1e-5)


@needs_op
def test_memory_of_a_95_percent_layer():
    conv = torch.nn.Conv2d(64, 64, 3, padding=1, bias=False)
    mask = torch.rand(conv.weight.shape) < 0.05
    layer = SparseConv2d(conv, mask)
    dense_bytes = conv.weight.numel() * 4 * 2  # weight + one optimizer state
    sparse_bytes = (layer.values.numel() * 4 * 2 + layer.col.numel() * 4 + layer.t_idx.numel() * 4
                    + layer.row_ptr.numel() * 8 + layer.t_ptr.numel() * 8)
    density = mask.float().mean().item()
    # values + momentum + the two int32 index arrays: 2 x density of the dense layer (plus
    # the row pointers); the flat index kept for the state dict is on top of that
    assert sparse_bytes <= 2 * density * dense_bytes + 8 * (64 + 65) * 2


@needs_op
def test_example_inputs_measure_and_report():
    dense, masks = masked_net(torch.float32)
    x, _ = data(torch.float32)
    net = sparsify(copy.deepcopy(dense), masks, example_inputs=x, min_sparsity=0.8)
    report = {e.name: e for e in net.sparsepai_sparsify_report}
    assert set(report) == {"c1", "c2", "c3", "fc"}
    assert not report["c1"].swapped and "min_sparsity" in report["c1"].reason
    for name in ("c2", "c3", "fc"):
        e = report[name]
        assert e.dense_ms > 0 and e.sparse_ms > 0
        assert e.swapped == isinstance(getattr(net, name), (SparseConv2d, SparseLinear))
        assert e.swapped == (e.sparse_ms < e.dense_ms)
    net.eval(), dense.eval()
    torch.testing.assert_close(net(x), dense(x), atol=1e-5, rtol=1e-5)
    assert sp.sparse.format_report(net.sparsepai_sparsify_report).count("\n") == 3


@needs_op
def test_auto_mode_decides_on_first_call():
    dense, masks = masked_net(torch.float32)
    net = sparsify(copy.deepcopy(dense), masks)
    assert net.c3.mode == "auto"
    x, _ = data(torch.float32)
    net.eval(), dense.eval()
    torch.testing.assert_close(net(x), dense(x), atol=1e-5, rtol=1e-5)
    assert net.c3.mode in ("sparse", "dense") and set(net.c3.timing) == {"sparse_ms", "dense_ms"}
    assert net.c3.values.grad is None


def test_bad_input_changes_nothing():
    dense, masks = masked_net(torch.float32)
    before = copy.deepcopy(dense.state_dict())
    bad = dict(masks)
    bad["c3.weight"] = torch.ones(3, 3, dtype=torch.bool)
    with pytest.raises(ValueError, match="shape"):
        sparsify(dense, bad)
    with pytest.raises(ValueError, match="min_sparsity"):
        sparsify(dense, masks, min_sparsity=1.5)
    with pytest.raises(ValueError, match="no masks"):
        sparsify(Net())
    assert not any(isinstance(m, (SparseConv2d, SparseLinear)) for m in dense.modules())
    for k, v in dense.state_dict().items():
        assert torch.equal(v, before[k])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_cuda_layers_stay_dense_with_one_warning():
    dense, masks = masked_net(torch.float32)
    dense = dense.cuda()
    with pytest.warns(RuntimeWarning, match="not on the CPU"):
        sparsify(dense, {k: v.cuda() for k, v in masks.items()})
    assert not any(isinstance(m, (SparseConv2d, SparseLinear)) for m in dense.modules())
