"""The predictor's input features (sparsepai/autosparse/features.py): RMS normalisation per layer
or per model, zeros kept, and a clear error without gradients."""

import pytest
import torch

from sparsepai.autosparse.features import feature_scales, layer_features, model_features


def test_layer_features_are_rms_normalised():
    w = torch.tensor([[3.0, -4.0]])  # rms = sqrt(12.5)
    g = torch.zeros(1, 2)
    f = layer_features(w, g, ("param", "grad"))
    torch.testing.assert_close(f[:, 0], torch.tensor([3.0, -4.0]) / 12.5 ** 0.5)
    assert torch.equal(f[:, 1], torch.zeros(2))  # an all-zero layer keeps zeros
    assert layer_features(w * 100, None, ("param",)).allclose(layer_features(w, None,
                                                                              ("param",)))
    with pytest.raises(ValueError, match="grad"):
        layer_features(w, None, ("grad",))


def test_model_normalisation_keeps_the_layers_relative_scale():
    params = {"a": torch.tensor([1.0, -1.0]), "b": torch.tensor([10.0, 0.0, -10.0, 10.0])}
    grads = {"a": torch.tensor([0.5, 0.5]), "b": torch.zeros(4)}
    # model RMS of the weights: sqrt((1 + 1 + 100 + 0 + 100 + 100) / 6) = sqrt(302 / 6)
    rms = (302 / 6) ** 0.5
    sc = feature_scales(params, grads, ["a", "b"], ("param", "grad"), "model")
    assert sc["param"]["a"] == sc["param"]["b"] == pytest.approx(rms)
    feats = dict(model_features(params, grads, ["a", "b"], ("param", "grad"), "model"))
    torch.testing.assert_close(feats["b"][:, 0], params["b"] / rms)
    # gradients: model RMS sqrt((0.25 + 0.25) / 6)
    torch.testing.assert_close(feats["a"][:, 1], torch.full((2,), 0.5 / (0.5 / 6) ** 0.5))
    per_layer = dict(model_features(params, grads, ["a", "b"], ("param",), "layer"))
    torch.testing.assert_close(per_layer["a"][:, 0], torch.tensor([1.0, -1.0]))
    torch.testing.assert_close(per_layer["b"][:, 0], params["b"] / (300 / 4) ** 0.5)


def _rank_oracle(w):
    # position among |w| ordered ascending, ties by flat index, counted pairwise
    a = w.reshape(-1).abs()
    idx = torch.arange(a.numel())
    below = (a[None, :] < a[:, None]) | ((a[None, :] == a[:, None]) & (idx[None, :] < idx[:, None]))
    return below.sum(1).float() / max(a.numel() - 1, 1)


def test_rank_feature_is_the_magnitude_position_inside_the_layer():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(7, 5, generator=g)
    w[0, 1], w[3, 2], w[6, 4] = 0.5, -0.5, 0.5  # ties in |w|
    f = layer_features(w, None, ("rank",))
    torch.testing.assert_close(f[:, 0], _rank_oracle(w), rtol=0, atol=1e-7)
    assert f[:, 0].min() == 0 and f[:, 0].max() == 1
    # scale-free: never divided by an RMS, whatever the normalisation
    params = {"a": w, "b": 100 * w}
    feats = dict(model_features(params, None, ["a", "b"], ("rank",), "model"))
    torch.testing.assert_close(feats["a"], feats["b"])
    assert layer_features(torch.tensor([2.0]), None, ("rank",)).tolist() == [[1.0]]


def test_fanin_feature_is_log_inputs_per_output_unit():
    conv = torch.nn.Conv2d(4, 6, 3, groups=2)
    lin = torch.nn.Linear(7, 5)
    for m, fan_in in ((conv, conv.in_channels // conv.groups * 3 * 3), (lin, lin.in_features)):
        f = layer_features(m.weight, None, ("param", "fanin"))
        assert f.shape == (m.weight.numel(), 2)
        torch.testing.assert_close(f[:, 1], torch.full((m.weight.numel(),),
                                                       float(torch.tensor(fan_in).log())))
    sc = feature_scales({"w": lin.weight}, None, ["w"], ("param", "rank", "fanin"), "layer")
    assert set(sc) == {"param"}  # only param/grad carry a scale
