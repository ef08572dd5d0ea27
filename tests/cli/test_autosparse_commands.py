"""The AutoSparse command line end to end on a tiny budget: two IRP runs with the CCC report,
a predictor, pruning with it, and the error for a folder holding another run (corrupt predictor
files are tested in process, test_predictor.py)."""

import json
import os

from tests.cli.helpers import cli


def test_help_describes_the_new_commands():
    from sparsepai.cli import build_parser

    # in process: four interpreter start-ups cost more than the rest of this file
    sub = next(a for a in build_parser()._actions if a.dest == "cmd").choices
    for cmd, options in (("irp", ("--rounds", "--epochs-per-round", "--prune-fraction",
                                  "--ccc", "--no-resume")),
                         ("ccc", ("run_a", "--json")),
                         ("train-predictor", ("--backbone", "--features", "--holdout")),
                         ("prune", ("--predictor", "--unseen-layers"))):
        text = sub[cmd].format_help()
        for o in options:
            assert o in text, (cmd, o)


def test_train_predictor_feature_choices_are_the_library_features():
    from sparsepai.autosparse.features import FEATURES
    from sparsepai.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "cmd").choices
    feats = next(a for a in sub["train-predictor"]._actions if a.dest == "features")
    assert tuple(feats.choices) == FEATURES


def test_irp_ccc_predictor_prune_end_to_end(tmp_path):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    common = ["--model", "lenet5", "--dataset", "digits", "--rounds", "3",
              "--epochs-per-round", "1", "--prune-fraction", "0.5", "--no-progress"]
    p = cli("irp", *common, "--out", a)
    assert p.returncode == 0, p.stderr
    p = cli("irp", *common, "--train-seed", "1", "--out", b, "--ccc", a)
    assert p.returncode == 0, p.stderr
    assert "CCC of survival scores" in p.stdout and "conv1.weight" in p.stdout
    p = cli("ccc", a, b, "--json")
    assert p.returncode == 0, p.stderr
    rep = json.loads(p.stdout)
    assert -1 <= rep["overall"] <= 1 and rep["rounds"] == 3
    # the same folder with other arguments: a clear error, nothing changed
    before = sorted(os.listdir(a))
    p = cli("irp", *common[:-1], "--lr", "0.01", "--out", a)
    assert p.returncode != 0 and "another run" in p.stderr
    assert sorted(os.listdir(a)) == before

    pred, png = str(tmp_path / "p.safetensors"), str(tmp_path / "f.png")
    p = cli("train-predictor", "--irp", a, b, "--epochs", "3", "--out", pred, "--plot", png,
            "--no-progress")
    assert p.returncode == 0, p.stderr
    assert "held-out MSE" in p.stdout and os.path.exists(pred) and os.path.exists(png)

    masks = str(tmp_path / "m.safetensors")
    p = cli("prune", "--model", "lenet5", "--method", "autosparse", "--predictor", pred,
            "--sparsity", "0.9", "--out", masks)
    assert p.returncode == 0, p.stderr
    from sparsepai.masks.io import read_masks

    m, meta = read_masks(masks)
    total = sum(v.numel() for v in m.values())
    assert sum(int(v.sum()) for v in m.values()) == total - round(0.9 * total)
    assert meta["predictor"] == pred


def test_prune_autosparse_without_predictor():
    p = cli("prune", "--method", "autosparse", "--sparsity", "0.5", "--out", os.devnull)
    assert p.returncode == 2 and "needs predictor" in p.stderr
