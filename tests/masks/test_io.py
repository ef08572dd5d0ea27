"""Masks on disk (``sp.save_masks`` / ``sp.load_masks``): round trip with metadata, checks
against the model at saving and loading, and every broken file a ValueError naming the path and
the problem (FileNotFoundError for a missing one), leaving the model as it was."""

import json
import os

import pytest
import torch

import sparsepai as sp
from sparsepai.masks.io import read_masks
from tests.tiny_nets import convnet, mlp


def test_round_trip_with_metadata(tmp_path):
    model = convnet()
    masks = sp.prune(model, "magnitude", 0.8)
    path = str(tmp_path / "m.safetensors")
    sp.save_masks(path, masks, model, meta={"method": "magnitude", "sparsity": 0.8})
    got, meta = read_masks(path, model)
    assert meta == {"method": "magnitude", "sparsity": 0.8, "kind": "masks",
                    "structured": False, "model_class": "Sequential"}
    assert set(got) == set(masks) and all(torch.equal(got[k], masks[k]) for k in masks)
    plain = sp.load_masks(path)
    assert isinstance(plain, dict) and all(torch.equal(plain[k], masks[k]) for k in masks)
    with open(path, "rb") as f:
        assert not f.read(2).startswith(b"\x80")  # not a pickle


def test_channel_masks_round_trip(tmp_path):
    model = convnet()
    masks = sp.prune(model, "magnitude", 0.5, structured=True,
                     example_inputs=torch.randn(2, 1, 8, 8))
    path = str(tmp_path / "c.safetensors")
    sp.save_masks(path, masks, model)
    got, meta = read_masks(path, model)
    assert meta["structured"] is True and set(got) == set(masks)
    assert all(torch.equal(got[k], masks[k]) for k in masks)


def test_mask_file_for_a_different_model(tmp_path):
    path = str(tmp_path / "m.safetensors")
    sp.save_masks(path, sp.prune(convnet(), "magnitude", 0.8))
    other = mlp(dtype=torch.float32)
    before = {k: v.clone() for k, v in other.state_dict().items()}
    with pytest.raises(ValueError, match=r"m.safetensors: the model has no parameters named "
                                         r"\['3.weight', '7.weight'\] \(masks for a different"):
        sp.load_masks(path, other)
    # same names, other shapes (a wider network)
    torch.manual_seed(0)
    wider = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
        torch.nn.Conv2d(8, 6, 3, stride=2), torch.nn.BatchNorm2d(6), torch.nn.ReLU(),
        torch.nn.Flatten(), torch.nn.Linear(6 * 3 * 3, 10))
    wider_before = {k: v.clone() for k, v in wider.state_dict().items()}
    with pytest.raises(ValueError, match=r"the mask of '0.weight' has shape \(4, 1, 3, 3\), "
                                         r"the parameter \(8, 1, 3, 3\).*different model"):
        sp.load_masks(path, wider)
    # apply_masks checks every mask before zeroing any: a bad one leaves the model unchanged
    masks = sp.load_masks(path)
    bad = dict(masks, **{"0.weight": torch.zeros(8, 1, 3, 3, dtype=torch.bool)})
    with pytest.raises(ValueError, match="the mask of '3.weight' has shape"):
        sp.apply_masks(wider, bad)
    for model, ref in ((other, before), (wider, wider_before)):
        assert all(torch.equal(ref[k], v) for k, v in model.state_dict().items())
        assert not hasattr(model, "sparsepai_masks")


def test_save_checks_the_model_first(tmp_path):
    path = tmp_path / "m.safetensors"
    with pytest.raises(ValueError, match="save_masks: the model has no parameters named"):
        sp.save_masks(str(path), sp.prune(convnet(), "magnitude", 0.8), mlp())
    with pytest.raises(TypeError, match="save_masks: the mask of 'w' must be a bool tensor"):
        sp.save_masks(str(path), {"w": torch.ones(3)})
    assert not path.exists() and os.listdir(tmp_path) == []


def test_written_atomically_with_normal_mode(tmp_path):
    old = os.umask(0o022)
    try:
        path = tmp_path / "m.safetensors"
        sp.save_masks(str(path), {"w": torch.ones(3, dtype=torch.bool)})
        assert os.stat(path).st_mode & 0o777 == 0o644  # safetensors' save_file gives 0600
        assert os.listdir(tmp_path) == ["m.safetensors"]  # no temporary left
    finally:
        os.umask(old)


def _file(tmp_path, name, data: bytes):
    p = tmp_path / name
    p.write_bytes(data)
    return str(p)


def test_broken_files_name_the_path_and_the_problem(tmp_path):
    good = tmp_path / "good.safetensors"
    sp.save_masks(str(good), {"w": torch.ones(100, dtype=torch.bool)})
    data = good.read_bytes()
    cases = {
        "truncated": (data[:-10], "not a readable mask file"),
        "garbage": (b"this is not safetensors at all", "not a readable mask file"),
        "empty": (b"", "not a readable mask file"),
    }
    for name, (content, match) in cases.items():
        path = _file(tmp_path, f"{name}.safetensors", content)
        with pytest.raises(ValueError, match=match) as e:
            sp.load_masks(path)
        assert path in str(e.value) and len(str(e.value).splitlines()) == 1
    with pytest.raises(FileNotFoundError, match="none.safetensors: no such mask file"):
        sp.load_masks(str(tmp_path / "none.safetensors"))
    with pytest.raises(ValueError, match="is a folder"):
        sp.load_masks(str(tmp_path))


def _raw(tensors, metadata):
    from safetensors.torch import save

    return save(tensors, metadata=metadata)


def test_bad_metadata_float_masks_and_other_kinds(tmp_path):
    ones = {"w": torch.ones(3, dtype=torch.bool)}
    path = _file(tmp_path, "badjson.safetensors", _raw(ones, {"sparsepai": "{not json"}))
    with pytest.raises(ValueError, match="badjson.safetensors: its 'sparsepai' metadata is not "
                                         "valid JSON"):
        sp.load_masks(path)
    path = _file(tmp_path, "list.safetensors", _raw(ones, {"sparsepai": "[1, 2]"}))
    with pytest.raises(ValueError, match="metadata is a list, not a JSON object"):
        sp.load_masks(path)
    # float masks were reported as "for a different model"
    model = convnet()
    floats = {k: v.float() for k, v in sp.prune(model, "magnitude", 0.5).items()}
    path = _file(tmp_path, "float.safetensors", _raw(floats, {"sparsepai": "{}"}))
    with pytest.raises(ValueError, match=r"float.safetensors: the mask of '0.weight' is "
                                         r"torch.float32; mask files hold bool tensors"):
        sp.load_masks(path, model)
    path = _file(tmp_path, "slim.safetensors",
                 _raw(ones, {"sparsepai": json.dumps({"kind": "predictor"})}))
    with pytest.raises(ValueError, match="a sparsepai predictor file, not a mask file"):
        sp.load_masks(path)
    # files of sparsepai 0.1 (no kind) still load
    path = _file(tmp_path, "old.safetensors", _raw(ones, {"sparsepai": json.dumps({"a": 1})}))
    assert torch.equal(sp.load_masks(path)["w"], ones["w"])


def test_load_masks_given_a_slim_model_file_says_what_it_is(tmp_path):
    from tests.tiny_nets import save_slim_convnet

    path = str(tmp_path / "slim.safetensors")
    save_slim_convnet(path)
    with pytest.raises(ValueError, match=f"{path}: a sparsepai slim model file .*not a mask "
                                         r"file; read it with sparsepai.structured.load_slim"):
        sp.load_masks(path)
