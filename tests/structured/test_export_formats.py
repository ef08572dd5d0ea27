"""Slim models export: torch.export, TorchScript trace and ONNX (onnxruntime gives the same
outputs), for a ResNet, an EfficientNet (squeeze-and-excitation) and a ViT."""

import pytest
import torch

import sparsepai as sp

timm = pytest.importorskip("timm")


def _models():
    import torchvision

    yield "resnet18", torchvision.models.resnet18(num_classes=5), torch.randn(2, 3, 32, 32)
    yield "efficientnet_b0", timm.create_model("efficientnet_b0", pretrained=False,
                                               num_classes=5), torch.randn(2, 3, 32, 32)
    yield "vit", timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32,
                                   patch_size=8, depth=2, num_classes=5), torch.randn(2, 3, 32, 32)


MODELS = {name: (m, x) for name, m, x in _models()}


@pytest.fixture(scope="module")
def slims():
    out = {}
    for name, (model, x) in MODELS.items():
        torch.manual_seed(0)
        model.eval()
        masks = sp.prune(model, "magnitude", 0.4, structured=True, example_inputs=x)
        out[name] = sp.slim(model, masks).eval()
    return out


@pytest.mark.parametrize("name", sorted(MODELS))
def test_torch_export_and_torchscript(slims, name):
    slim, x = slims[name], MODELS[name][1]
    with torch.no_grad():
        want = slim(x)
        torch.testing.assert_close(torch.export.export(slim, (x,)).module()(x), want,
                                   atol=1e-5, rtol=1e-4)
        traced = torch.jit.trace(slim, x)
        torch.testing.assert_close(traced(x), want, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_onnx_runs_in_onnxruntime(slims, name, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    slim, x = slims[name], MODELS[name][1]
    path = str(tmp_path / f"{name}.onnx")
    torch.onnx.export(slim, (x,), path, input_names=["x"], output_names=["y"], dynamo=False)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    (got,) = sess.run(["y"], {"x": x.numpy()})
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(got), slim(x), atol=1e-4, rtol=1e-3)
