"""An output path that is an input (or another output) is refused before any work, with one
line and exit status 2, and the input is left as it was: compared as resolved paths and inodes,
so a symbolic or hard link to the input is refused too."""

import os

import pytest

from tests.cli.helpers import main, no_work

_WORK = [("sparsepai.cli.common", "model_and_data"), ("sparsepai.api", "prune"),
         ("sparsepai.experiments.train", "train"),
         ("sparsepai.autosparse.training", "train_predictor"),
         ("sparsepai.autosparse.irp", "irp")]


def _refused(capsys, monkeypatch, args, keep, match):
    no_work(monkeypatch, *_WORK)
    before = {p: open(p, "rb").read() for p in keep}
    code, _, err = main(capsys, *args)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert match in err, err
    assert {p: open(p, "rb").read() for p in keep} == before


@pytest.fixture
def files(tmp_path):
    for name in ("P.safetensors", "M.safetensors"):
        (tmp_path / name).write_bytes(b"the user's " + name.encode())
    run = tmp_path / "runA"
    (run / "masks").mkdir(parents=True)
    (run / "survival.safetensors").write_bytes(b"survival")
    (tmp_path / "runB").mkdir()
    return tmp_path


def test_prune_out_is_the_predictor(capsys, monkeypatch, files):
    p = str(files / "P.safetensors")
    _refused(capsys, monkeypatch, ["prune", "--method", "autosparse", "--predictor", p,
                                   "--sparsity", "0.5", "--out", p], [p],
             "is also the input --predictor")
    link = files / "link.safetensors"
    os.symlink(p, link)
    _refused(capsys, monkeypatch, ["prune", "--method", "autosparse", "--predictor", p,
                                   "--sparsity", "0.5", "--out", str(link)], [p],
             "is also the input --predictor")
    hard = files / "hard.safetensors"
    os.link(p, hard)
    _refused(capsys, monkeypatch, ["prune", "--method", "autosparse", "--predictor", p,
                                   "--sparsity", "0.5", "--out", str(hard)], [p],
             "is also the input --predictor")


def test_prune_out_is_slim_out(capsys, monkeypatch, files):
    x = str(files / "M.safetensors")
    _refused(capsys, monkeypatch, ["prune", "--method", "magnitude", "--structured",
                                   "--sparsity", "0.5", "--out", x, "--slim-out",
                                   os.path.join(str(files), ".", "M.safetensors")], [x],
             "--slim-out")


def test_train_out_is_the_masks(capsys, monkeypatch, files):
    m = str(files / "M.safetensors")
    _refused(capsys, monkeypatch, ["train", "--masks", m, "--out", m], [m],
             "is also the input --masks")


def test_train_predictor_out_inside_an_irp_run(capsys, monkeypatch, files):
    a, b = str(files / "runA"), str(files / "runB")
    s = os.path.join(a, "survival.safetensors")
    _refused(capsys, monkeypatch, ["train-predictor", "--irp", a, b, "--out", s], [s],
             "lies inside the input folder --irp")
    _refused(capsys, monkeypatch, ["train-predictor", "--irp", a, "--out",
                                   str(files / "p.safetensors"), "--plot",
                                   str(files / "p.safetensors")], [s], "is also --out")


def test_irp_out_is_the_ccc_run(capsys, monkeypatch, files):
    a = str(files / "runA")
    _refused(capsys, monkeypatch, ["irp", "--out", a, "--ccc", a],
             [os.path.join(a, "survival.safetensors")], "is also the input --ccc")


def test_distinct_paths_pass(files):
    from sparsepai.cli.common import check_distinct

    check_distinct([("--irp", str(files / "runA")), ("--predictor", None)],
                   [("--out", str(files / "runAB" / "p.safetensors")), ("--plot", None),
                    ("--x", str(files / "new.json"))])
