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


def test_a_users_tmp_file_is_never_touched(tmp_path, umask022):
    # a fixed "<path>.tmp" used to be unlinked first: the user's notes were deleted
    path = tmp_path / "m.safetensors"
    notes = tmp_path / "m.safetensors.tmp"
    notes.write_text("notes")
    os.chmod(notes, 0o600)
    _io.save_tensors(str(path), {"a": torch.ones(2)})
    assert notes.read_text() == "notes" and os.stat(notes).st_mode & 0o777 == 0o600
    assert os.stat(path).st_mode & 0o777 == 0o644
    assert sorted(os.listdir(tmp_path)) == ["m.safetensors", "m.safetensors.tmp"]
    _io.atomic_write_json(str(tmp_path / "j.json"), {"b": 1, "a": 2})
    assert (tmp_path / "j.json").read_text() == '{\n "a": 2,\n "b": 1\n}\n'


def test_remove_stale_tmp_removes_only_our_temporaries(tmp_path):
    (tmp_path / "sub").mkdir()
    ours = []
    for where in (tmp_path / "r.json", tmp_path / "sub" / "m.safetensors"):
        fd, tmp = _io._open_tmp(str(where))  # what a crash between write and rename leaves
        os.close(fd)
        ours.append(tmp)
    users = [tmp_path / "draft.tmp", tmp_path / "r.json.tmp", tmp_path / "sub" / ".x.tmp",
             tmp_path / ".r.json.notours.tmp"]
    for u in users:
        u.write_text("mine")
    _io.remove_stale_tmp(str(tmp_path))
    assert not any(os.path.exists(t) for t in ours)
    assert all(u.read_text() == "mine" for u in users)


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "f.json"
    _io.atomic_write_json(str(path), {"old": 1})

    def broken(*a, **k):
        raise OSError(28, "No space left on device")

    for target in ("replace", "fsync"):
        with monkeypatch.context() as m:
            m.setattr(os, target, broken)
            with pytest.raises(OSError, match="No space left"):
                _io.atomic_write_json(str(path), {"new": 2})
        assert os.listdir(tmp_path) == ["f.json"], target
        assert path.read_text() == '{\n "old": 1\n}\n'


def test_a_folder_is_refused_before_serialising(tmp_path, monkeypatch):
    import safetensors.torch

    def no_serialise(*a, **k):
        raise AssertionError("serialised before the path was checked")

    monkeypatch.setattr(safetensors.torch, "save", no_serialise)
    monkeypatch.setattr(_io.json, "dumps", no_serialise)
    for write in (lambda p: _io.save_tensors(p, {"a": torch.ones(1)}),
                  lambda p: _io.atomic_write_json(p, {"a": 1}),
                  lambda p: _io.atomic_write_bytes(p, b"x")):
        with pytest.raises(IsADirectoryError, match=f"{tmp_path}: is a folder, not a file"):
            write(str(tmp_path))
    assert os.listdir(tmp_path) == []


def _save_many(path: str, tag: int, n: int) -> None:
    for i in range(n):
        _io.atomic_write_bytes(path, f"{tag} {i}\n".encode() * 1000)


def test_concurrent_saves_to_one_path_all_succeed(tmp_path):
    # every DDP rank calling save_masks on one path: with one fixed temporary name a process
    # unlinked or renamed another's temporary and failed with FileNotFoundError
    import multiprocessing

    path = str(tmp_path / "m.safetensors")
    ctx = multiprocessing.get_context("fork")  # the children use no torch
    procs = [ctx.Process(target=_save_many, args=(path, tag, 20)) for tag in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    assert os.listdir(tmp_path) == ["m.safetensors"]
    text = open(path).read().splitlines()
    assert len(text) == 1000 and len(set(text)) == 1  # one whole write, not a mix


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


def test_metadata_nested_too_deeply(tmp_path):
    from safetensors.torch import save_file

    path = str(tmp_path / "deep.safetensors")
    save_file({"a": torch.ones(1)}, path, metadata={_io.META_KEY: "[" * 100_000 + "]" * 100_000})
    for fn in (_io.read_tensors, _io.read_meta):
        with pytest.raises(ValueError, match=f"{path}: its 'sparsepai' metadata is nested too "
                                             "deeply"):
            fn(path)


def test_an_unreadable_file_says_permission_denied(tmp_path, monkeypatch):
    # root reads anything, so the refusal is the one open() raises for other users
    path = str(tmp_path / "m.safetensors")
    _io.save_tensors(path, {"a": torch.ones(1)})

    def denied(p, *a, **k):
        raise PermissionError(13, "Permission denied", p)

    monkeypatch.setattr(_io, "open", denied, raising=False)
    for fn in (_io.read_tensors, _io.read_meta):
        with pytest.raises(PermissionError, match=f"^{path}: permission denied: cannot read this "
                                                  "mask file$"):
            fn(path, "mask")


def test_load_slim_with_tensors_of_another_shape_names_the_file(tmp_path):
    from sparsepai.structured import load_slim
    from tests.tiny_nets import convnet, save_slim_convnet

    path = str(tmp_path / "slim.safetensors")
    save_slim_convnet(path)
    tensors, meta = _io.read_tensors(path)
    key = next(k for k in tensors if k.startswith("state.") and k.endswith("weight"))
    tensors[key] = torch.zeros(tensors[key].numel() + 1)  # corrupt: a tensor of another shape
    _io.save_tensors(path, tensors, meta)
    with pytest.raises(ValueError, match=f"load_slim: {path}: its tensors do not rebuild the "
                                         "model given"):
        load_slim(path, convnet())
