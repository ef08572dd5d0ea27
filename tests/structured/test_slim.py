"""sp.slim: the slim model computes what the masked dense model computes (outputs, gradients,
a training step), for every listed architecture; save/load and torch.export round trips."""

import copy

import pytest
import torch

import sparsepai as sp
from sparsepai.optim import MaskedSGD
from sparsepai.structured import ChannelSparseConv2d, ChannelSparseLinear, load_slim, save_slim
from tests.structured.helpers import ARCHS, build, random_masks

TOL = dict(atol=2e-5, rtol=2e-4)


def close(a, b, tol=1e-9, scale=None):
    """Equal up to rounding, relative to the output's scale. The equality tests run in float64:
    in float32, deep nets in train mode amplify rounding through their batch statistics to
    ~1e-4, which would hide real differences of that size."""
    if scale is None:
        scale = float(b.detach().abs().max()) + 1e-6
    torch.testing.assert_close(a, b, atol=tol * scale, rtol=tol * 100)


def _weights(model):
    return sum(m.weight.numel() for m in model.modules()
               if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear, ChannelSparseConv2d,
                                 ChannelSparseLinear)))


@pytest.mark.parametrize("arch", sorted(ARCHS))
@pytest.mark.parametrize("shared", [True, False], ids=["shared", "per-layer"])
def test_slim_equals_masked_dense(arch, shared):
    model, x = build(arch)
    model, x = model.double(), x.double()
    before = copy.deepcopy(model.state_dict())
    masks = random_masks(model, 0.5, shared, x=x)
    slim = sp.slim(model, masks)
    for k, v in model.state_dict().items():  # the user's model is untouched
        assert torch.equal(v, before[k]), k
    dense = sp.apply_masks(copy.deepcopy(model), masks)
    kept = sum(int(dense.sparsepai_masks[f"{n}.weight"].sum())
               if f"{n}.weight" in dense.sparsepai_masks else m.weight.numel()
               for n, m in dense.named_modules() if isinstance(m, (torch.nn.Conv2d,
                                                                    torch.nn.Linear)))
    if shared:  # nothing is computed that the masks drop
        assert _weights(slim) == kept
    else:
        assert kept <= _weights(slim) < _weights(model)
    assert sum(p.numel() for p in slim.parameters()) < sum(p.numel() for p in model.parameters())
    for mode in ("eval", "train"):
        getattr(dense, mode)()
        getattr(slim, mode)()
        close(slim(x), dense(x))


@pytest.mark.parametrize("arch", ["resnet20", "catnet", "mobilenet_v2", "lenet5"])
@pytest.mark.parametrize("shared", [True, False], ids=["shared", "per-layer"])
def test_slim_trains_like_masked_dense(arch, shared):
    """Gradients of the kept weights match, so torch.optim.SGD on the slim model follows
    MaskedSGD on the masked dense model step for step."""
    model, x = build(arch)
    # float64 and a batch of 32. Training through batch norms amplifies rounding at every step,
    # and how much depends on the batch: with 4 samples MobileNetV2's late norms (1x1 feature
    # maps) normalise over 4 values and grow a 1e-14 difference ~1e3-1e4x per step, so after
    # three steps the result depends on the CPU's vector width (4.7e-5 on one AMD machine,
    # 5.5e-5 here). With 32 samples the growth measured here is ~10x per step (6e-13 after
    # three steps, the worst of these architectures): five orders below the tolerance.
    g = torch.Generator().manual_seed(5)
    model = model.double()
    x = torch.randn(32, *x.shape[1:], generator=g, dtype=torch.float64)
    y = torch.randint(0, 5, (x.shape[0],), generator=g)
    masks = random_masks(model, 0.6, shared, seed=1, x=x)
    slim = sp.slim(model, masks).train()
    dense = sp.apply_masks(copy.deepcopy(model), masks).train()
    opt_s = torch.optim.SGD(slim.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-3)
    opt_d = MaskedSGD(dense.named_parameters(), masks=None, lr=0.01, momentum=0.9,
                      weight_decay=1e-3)
    loss_fn = torch.nn.functional.cross_entropy
    for step in range(3):
        for net, opt in ((slim, opt_s), (dense, opt_d)):
            opt.zero_grad()
            loss_fn(net(x), y).backward()
        if step == 0 and shared:
            # the gradient of every slim weight is the dense gradient of the weight it kept
            wm, dp = dense.sparsepai_masks, dict(dense.named_parameters())
            top = max(float(p.grad.abs().max()) for p in dense.parameters())
            for name, p in slim.named_parameters():
                g = dp[name].grad
                want = g[wm[name]] if name in wm else g.flatten()
                close(p.grad.flatten(), want, scale=top)
        for opt in (opt_s, opt_d):
            opt.step()
    slim.eval()
    dense.eval()
    close(slim(x), dense(x), tol=1e-7)


def test_slim_uses_channel_sparse_conv_only_for_partial_producers():
    model, x = build("resnet20")
    shared = sp.slim(model, random_masks(model, 0.5, True, x=x))
    assert not any(isinstance(m, ChannelSparseConv2d) for m in shared.modules())
    per_layer = sp.slim(model, random_masks(model, 0.5, False, x=x))
    assert any(isinstance(m, ChannelSparseConv2d) for m in per_layer.modules())


def test_generic_scatter_for_layers_the_op_does_not_cover():
    from sparsepai.structured import ChannelScatter

    model, x = build("reflectnet")
    masks = {"stem": torch.tensor([1, 1, 0, 1, 0, 1, 1, 0], dtype=torch.bool),
             "branch": torch.tensor([1, 0, 0, 1, 0, 0, 1, 0], dtype=torch.bool)}
    slim = sp.slim(model, masks)
    assert isinstance(slim.branch, ChannelScatter)
    dense = sp.apply_masks(copy.deepcopy(model), masks)
    for mode in ("eval", "train"):
        close(getattr(slim, mode)()(x), getattr(dense, mode)()(x), tol=1e-5)


def test_round_to_multiple_of_8():
    model, x = build("resnet18")
    masks = random_masks(model, 0.3, True, seed=2, x=x)
    slim = sp.slim(model, masks, round_to=8)
    for m in slim.modules():
        if isinstance(m, torch.nn.Conv2d) and m.in_channels > 3:
            assert m.out_channels % 8 == 0 and m.in_channels % 8 == 0, m
    used = slim.sparsepai_channel_masks
    for n, m in masks.items():  # only channels added, none removed
        assert bool((used[n] | ~m).all()) and int(used[n].sum()) >= int(m.sum())
    dense = sp.apply_masks(copy.deepcopy(model), used).eval()
    torch.testing.assert_close(slim.eval()(x), dense(x), **TOL)


@pytest.mark.parametrize("shared", [True, False], ids=["shared", "per-layer"])
def test_save_load_round_trip(tmp_path, shared):
    model, x = build("resnet20")
    slim = sp.slim(model, random_masks(model, 0.5, shared, x=x)).eval()
    with torch.no_grad():  # distinguish the saved weights from the dense model's
        for p in slim.parameters():
            p.add_(0.01)
    path = str(tmp_path / "slim.safetensors")
    save_slim(slim, path)
    fresh, _ = build("resnet20", seed=5)
    back = load_slim(path, fresh).eval()
    torch.testing.assert_close(back(x), slim(x), atol=0, rtol=0)
    with open(path, "rb") as f:
        assert b"pickle" not in f.read(200)
    with pytest.raises(ValueError, match="slim ResNet20"):
        load_slim(path, build("lenet5")[0])
    (tmp_path / "bad.safetensors").write_bytes(b"garbage")
    with pytest.raises(Exception):
        load_slim(str(tmp_path / "bad.safetensors"), fresh)


@pytest.mark.parametrize("shared", [True, False], ids=["shared", "per-layer"])
def test_export_round_trip(shared):
    model, x = build("resnet20")
    slim = sp.slim(model, random_masks(model, 0.5, shared, x=x)).eval()
    ep = torch.export.export(slim, (x,))
    torch.testing.assert_close(ep.module()(x), slim(x), **TOL)


def test_bad_masks_leave_the_model_untouched():
    model, x = build("resnet20")
    before = copy.deepcopy(model.state_dict())
    good = random_masks(model, x=x)
    with pytest.raises(ValueError, match="no convolution or linear layer named"):
        sp.slim(model, {**good, "nope": torch.ones(3, dtype=torch.bool)})
    with pytest.raises(ValueError, match="output channels"):
        sp.slim(model, {**good, "conv1": torch.ones(5, dtype=torch.bool)})
    with pytest.raises(TypeError, match="bool"):
        sp.slim(model, {**good, "conv1": torch.ones(16)})
    with pytest.raises(ValueError, match="removes every output channel"):
        sp.slim(model, {**good, "layers.0.conv1": torch.zeros(16, dtype=torch.bool)})
    with pytest.raises(ValueError, match="cannot be pruned"):
        sp.slim(model, {**good, "fc": torch.tensor([True] * 9 + [False])})
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_untraceable_model_names_the_module():
    class Branchy(torch.nn.Module):
        def forward(self, x):
            return x * 2 if x.sum() > 0 else x

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3)
            self.gate = Branchy()

        def forward(self, x):
            return self.gate(self.conv(x))

    with pytest.raises(sp.structured.TraceError, match="'gate'"):
        sp.slim(Net(), {})  # the torch.fx fallback
    with pytest.raises(sp.structured.TraceError, match="'gate'.*example input"):
        sp.slim(Net(), {}, example_inputs=torch.randn(2, 3, 8, 8))  # torch.export
