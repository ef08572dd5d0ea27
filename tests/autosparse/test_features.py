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
