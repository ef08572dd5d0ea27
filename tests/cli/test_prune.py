"""``sparsepai prune`` (and ``train`` on what it wrote): masks and slim models on disk, and every
argument checked before any pruning."""

import os

import pytest

from tests.cli.helpers import cli, main, no_work


def test_prune_then_train(tmp_path):
    masks = tmp_path / "m.safetensors"
    p = cli("prune", "--method", "prospr", "--sparsity", "0.8", "--option", "meta_steps=1",
            "--out", str(masks))
    assert p.returncode == 0, p.stderr
    assert "kept" in p.stdout and masks.exists()
    assert oct(os.stat(masks).st_mode & 0o777) == oct(0o666 & ~_umask())
    p = cli("train", "--masks", str(masks), "--epochs", "1", "--out", str(tmp_path / "r.json"))
    assert p.returncode == 0, p.stderr
    assert "test accuracy" in p.stdout
    # the same file against another architecture: a clear error
    p = cli("train", "--model", "lenet5", "--masks", str(masks), "--epochs", "1")
    assert p.returncode == 1 and "different model" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1, p.stderr


def _umask():
    old = os.umask(0)
    os.umask(old)
    return old


def test_structured_prune_slim_then_train(tmp_path):
    masks = tmp_path / "c.safetensors"
    slim = tmp_path / "slim.safetensors"
    p = cli("prune", "--structured", "--method", "snip", "--sparsity", "0.7", "--out",
            str(masks), "--slim-out", str(slim))
    assert p.returncode == 0, p.stderr
    assert "structured" in p.stdout and masks.exists() and slim.exists()
    p = cli("train", "--masks", str(masks), "--epochs", "1")
    assert p.returncode == 0, p.stderr
    assert "training the slim model" in p.stdout and "test accuracy" in p.stdout
    p = cli("train", "--model", "lenet5", "--masks", str(masks), "--epochs", "1")
    assert p.returncode == 1 and "different model" in p.stderr


# every check below must fire before the model is even built
_WORK = [("sparsepai.cli.common", "model_and_data"), ("sparsepai.api", "prune")]


@pytest.mark.parametrize("flag", ["--out", "--slim-out"])
def test_unwritable_out_is_refused_before_pruning(capsys, monkeypatch, tmp_path, flag):
    no_work(monkeypatch, *_WORK)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    target = str(blocker / "masks.safetensors")  # under a file: cannot be created, even as root
    args = ["--out", str(tmp_path / "ok.safetensors"), "--structured"]
    args += [flag, target]
    code, _, err = main(capsys, "prune", "--method", "magnitude", "--sparsity", "0.5", *args)
    assert code == 2 and f"{flag} {target}: cannot be written" in err, err
    assert os.listdir(tmp_path) == ["a-file"]
    code, _, err = main(capsys, "prune", "--method", "magnitude", "--sparsity", "0.5",
                        "--out", str(tmp_path))
    assert code == 2 and "is a folder, not a file" in err


def test_slim_out_needs_structured(capsys, monkeypatch, tmp_path):
    no_work(monkeypatch, *_WORK)
    code, _, err = main(capsys, "prune", "--method", "magnitude", "--sparsity", "0.5",
                        "--out", str(tmp_path / "m.safetensors"),
                        "--slim-out", str(tmp_path / "s.safetensors"))
    assert code == 2 and "--slim-out needs --structured" in err


def test_bad_option_and_missing_predictor(capsys, monkeypatch, tmp_path):
    no_work(monkeypatch, *_WORK)
    code, _, err = main(capsys, "prune", "--method", "snip", "--sparsity", "0.5",
                        "--option", "batches")
    assert code == 2 and "--option takes key=value" in err
    code, _, err = main(capsys, "prune", "--method", "autosparse", "--sparsity", "0.5",
                        "--predictor", str(tmp_path / "none.safetensors"))
    assert code == 2 and "--predictor" in err and "no such file" in err
