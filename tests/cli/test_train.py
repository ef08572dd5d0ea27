"""``sparsepai train``: arguments and output path checked before training."""

import os

import pytest

from tests.cli.helpers import main, no_work

_WORK = [("sparsepai.cli.common", "model_and_data"), ("sparsepai.experiments.train", "train")]


@pytest.mark.parametrize("epochs", ["0", "-1"])
def test_epochs_must_be_positive(capsys, monkeypatch, epochs):
    no_work(monkeypatch, *_WORK)
    code, _, err = main(capsys, "train", "--epochs", epochs)
    assert code == 2 and "--epochs: must be an integer >= 1" in err, err


def test_unwritable_out_is_refused_before_training(capsys, monkeypatch, tmp_path):
    no_work(monkeypatch, *_WORK)
    (tmp_path / "f").write_text("")
    target = str(tmp_path / "f" / "r.json")
    code, _, err = main(capsys, "train", "--epochs", "1", "--out", target)
    assert code == 2 and f"--out {target}: cannot be written" in err
    assert os.listdir(tmp_path) == ["f"]


def test_results_written(capsys, tmp_path):
    import json

    out = tmp_path / "sub" / "r.json"  # a new folder is fine
    code, stdout, err = main(capsys, "train", "--model", "smallconv", "--epochs", "1",
                             "--batch-size", "256", "--out", str(out))
    assert code == 0, err
    res = json.loads(out.read_text())
    assert res["config"]["epochs"] == 1 and len(res["train_loss"]) == 1
    assert f"test accuracy {100 * res['test_acc']:.2f}%" in stdout


def test_sparse_kernels_needs_masks(capsys, monkeypatch):
    no_work(monkeypatch, *_WORK)
    code, _, err = main(capsys, "train", "--epochs", "1", "--sparse-kernels")
    assert code == 2 and "--sparse-kernels needs --masks" in err, err


def test_sparse_kernels_train_and_report(capsys, tmp_path):
    import json

    from sparsepai._ext import has_op

    if not has_op("sparse_conv2d", "cpu"):
        pytest.skip("compiled extension not built")
    masks = tmp_path / "m.safetensors"
    code, _, err = main(capsys, "prune", "--model", "smallconv", "--method", "magnitude",
                        "--sparsity", "0.9", "--out", str(masks))
    assert code == 0, err
    out = tmp_path / "r.json"
    code, stdout, err = main(capsys, "train", "--model", "smallconv", "--epochs", "1",
                             "--batch-size", "256", "--masks", str(masks), "--sparse-kernels",
                             "--out", str(out))
    assert code == 0, err
    res = json.loads(out.read_text())
    rows = res["sparse_kernels"]
    assert rows and all({"name", "swapped", "reason"} <= set(r) for r in rows)
    assert "sparse kernels:" in stdout and rows[0]["name"] in stdout
