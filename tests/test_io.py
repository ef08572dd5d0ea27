"""``sparsepai._io``, the one writer and reader of our files: atomic writes with the normal file
mode, and broken files reported with their path. Every writer (masks, slim models, predictors,
IRP checkpoints, sweep reports) goes through it; the slim model is checked here end to end."""

import os

import pytest
import torch

from sparsepai import _io


@pytest.fixture
def umask022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_save_and_read_tensors(tmp_path, umask022):
    path = str(tmp_path / "sub" / "t.safetensors")  # missing folders are created
    t = {"a": torch.arange(6.0).reshape(2, 3).t(), "b": torch.ones(2, dtype=torch.bool)}
    _io.save_tensors(path, t, {"x": [1, 2], "y": "z"})
    got, meta = _io.read_tensors(path)
    assert meta == {"x": [1, 2], "y": "z"}
    assert torch.equal(got["a"], t["a"]) and torch.equal(got["b"], t["b"])
    assert _io.read_meta(path) == meta
    assert os.stat(path).st_mode & 0o777 == 0o644
    assert os.listdir(tmp_path / "sub") == ["t.safetensors"]


def test_a_stale_temporary_does_not_leak_its_mode(tmp_path, umask022):
    path = tmp_path / "j.json"
    stale = tmp_path / ("j.json" + _io.TMP_SUFFIX)
    stale.write_text("half")
    os.chmod(stale, 0o600)
    _io.atomic_write_json(str(path), {"b": 1, "a": 2})
    assert path.read_text() == '{\n "a": 2,\n "b": 1\n}\n'
    assert os.stat(path).st_mode & 0o777 == 0o644 and not stale.exists()


def test_read_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="x.safetensors: no such thing file"):
        _io.read_tensors(str(tmp_path / "x.safetensors"), "thing")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 3)
    for fn in (_io.read_tensors, _io.read_meta):
        with pytest.raises(ValueError, match=f"{bad}: not a readable thing file"):
            fn(str(bad), "thing")


def test_check_writable(tmp_path):
    _io.check_writable(str(tmp_path / "a" / "b" / "f.json"))  # creatable
    _io.check_writable(str(tmp_path / "new"), folder=True)
    assert os.listdir(tmp_path) == []  # nothing created, no probe left
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        _io.check_writable(str(tmp_path / "file" / "x"))
    with pytest.raises(ValueError, match="exists and is not a folder"):
        _io.check_writable(str(tmp_path / "file"), folder=True)
    with pytest.raises(ValueError, match="is a folder, not a file"):
        _io.check_writable(str(tmp_path))
    if os.geteuid() != 0:  # root writes anywhere
        ro = tmp_path / "ro"
        ro.mkdir()
        os.chmod(ro, 0o500)
        try:
            with pytest.raises(ValueError, match="cannot be written"):
                _io.check_writable(str(ro / "f"))
        finally:
            os.chmod(ro, 0o700)


def test_slim_files(tmp_path, umask022):
    import sparsepai as sp
    from sparsepai.structured import load_slim, save_slim
    from tests.tiny_nets import convnet

    model = convnet().eval()
    x = torch.randn(2, 1, 8, 8)
    small = sp.slim(model, sp.prune(model, "magnitude", 0.5, structured=True,
                                    example_inputs=x)).eval()
    path = tmp_path / "slim.safetensors"
    save_slim(small, str(path))
    assert os.stat(path).st_mode & 0o777 == 0o644
    torch.testing.assert_close(load_slim(str(path), convnet()).eval()(x), small(x), atol=0,
                               rtol=0)
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(ValueError, match=f"{path}: not a readable slim model file"):
        load_slim(str(path), convnet())
    masks = tmp_path / "m.safetensors"
    sp.save_masks(str(masks), {"w": torch.ones(2, dtype=torch.bool)})
    with pytest.raises(ValueError, match="is not a sparsepai slim model"):
        load_slim(str(masks), convnet())
