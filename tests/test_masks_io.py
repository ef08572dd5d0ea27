"""Masks on disk (safetensors): round trip with metadata, and a file for a different model is a
clear error that leaves the model as it was."""

import pytest
import torch

import sparsepai as sp
from sparsepai.masks_io import load_masks, save_masks
from tests.tiny_nets import convnet, mlp


def test_round_trip_with_metadata(tmp_path):
    model = convnet()
    masks = sp.prune(model, "magnitude", 0.8)
    path = str(tmp_path / "m.safetensors")
    save_masks(path, masks, {"method": "magnitude", "sparsity": 0.8})
    got, meta = load_masks(path, model)
    assert meta == {"method": "magnitude", "sparsity": 0.8}
    assert set(got) == set(masks) and all(torch.equal(got[k], masks[k]) for k in masks)
    with open(path, "rb") as f:
        assert not f.read(2).startswith(b"\x80")  # not a pickle


def test_mask_file_for_a_different_model(tmp_path):
    path = str(tmp_path / "m.safetensors")
    save_masks(path, sp.prune(convnet(), "magnitude", 0.8))
    other = mlp(dtype=torch.float32)
    before = {k: v.clone() for k, v in other.state_dict().items()}
    with pytest.raises(ValueError, match="'3.weight', which the model does not have: the mask "
                                         "file is for a different model"):
        load_masks(path, other)
    # same names, other shapes (a wider network)
    torch.manual_seed(0)
    wider = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
        torch.nn.Conv2d(8, 6, 3, stride=2), torch.nn.BatchNorm2d(6), torch.nn.ReLU(),
        torch.nn.Flatten(), torch.nn.Linear(6 * 3 * 3, 10))
    wider_before = {k: v.clone() for k, v in wider.state_dict().items()}
    with pytest.raises(ValueError, match=r"mask '0.weight' has shape \(4, 1, 3, 3\) "
                                         r".*different model"):
        load_masks(path, wider)
    # apply_masks checks every mask before zeroing any: a bad one leaves the model unchanged
    masks, _ = load_masks(path)
    bad = dict(masks, **{"0.weight": torch.zeros(8, 1, 3, 3, dtype=torch.bool)})
    with pytest.raises(ValueError, match="the mask of '3.weight' has shape"):
        sp.apply_masks(wider, bad)
    for model, ref in ((other, before), (wider, wider_before)):
        assert all(torch.equal(ref[k], v) for k, v in model.state_dict().items())
        assert not hasattr(model, "sparsepai_masks")
