"""The demo's structured line: dense and slim trained as a hand-written pipeline trains them,
resumed without retraining, summarised as same-seed ratios."""

import dataclasses

import pytest
import torch

import sparsepai as sp
from sparsepai.experiments import slim_line
from sparsepai.experiments.report import line_text
from sparsepai.experiments.slim_line import SlimLine, run_slim_line, summarize_line
from sparsepai.experiments.sweep import SweepConfig
from sparsepai.experiments.train import TrainConfig

CFG = SweepConfig(model="smallconv", methods=(), sparsities=(0.9,), seeds=(0,),
                  train=TrainConfig(epochs=1, batch_size=64, lr=0.05))
LINE = SlimLine(method="magnitude", sparsity=0.5)


def _by_hand(kind):
    """The same run written out: seeded model, structured masks on the seed's batches, slim."""
    from sparsepai.experiments.data import load_dataset, loader
    from sparsepai.experiments.models import get_model
    from sparsepai.experiments.train import train

    train_set, test_set, info = load_dataset("digits", seed=0)
    torch.manual_seed(0)
    model = get_model("smallconv", info.num_classes, info.in_channels, info.image_size)
    if kind == "slim":
        masks = sp.prune(model, "magnitude", 0.5, loader(train_set, 128, True, seed=0),
                         structured=True)
        model = sp.slim(model, masks)
    res = train(model, None, train_set, test_set, dataclasses.replace(CFG.train, seed=0),
                progress=False)
    return res["test_acc"], sum(p.numel() for p in model.parameters())


def test_line_matches_the_pipeline_by_hand_and_resumes(tmp_path, monkeypatch):
    rows = run_slim_line(CFG, str(tmp_path), LINE, progress=False)
    by = {r["kind"]: r for r in rows}
    assert set(by) == {"dense", "slim"} and all(r["seed"] == 0 for r in rows)
    for kind in ("dense", "slim"):
        acc, params = _by_hand(kind)
        assert by[kind]["test_acc"] == acc and by[kind]["params"] == params
        assert by[kind]["train_seconds"] > 0
    # structured 50% of the weights: about half of them left (input columns die too)
    assert by["slim"]["params"] < 0.6 * by["dense"]["params"]
    # a rerun reads them back and trains nothing
    monkeypatch.setattr("sparsepai.experiments.slim_line.train", _boom)
    again = run_slim_line(CFG, str(tmp_path), LINE, progress=False)
    assert again == rows
    # another sparsity is another line: it would train
    with pytest.raises(AssertionError, match="trained"):
        run_slim_line(CFG, str(tmp_path), SlimLine("magnitude", 0.8), progress=False)


def _boom(*a, **k):
    raise AssertionError("trained again")


def test_slim_rows_of_other_defaults_are_not_reused(tmp_path, monkeypatch):
    """A folder from before the structured defaults were recorded holds slim rows without them:
    a rerun keeps the dense row and trains the slim model again, recording its options."""
    from sparsepai.experiments.sweep import append_row

    log = str(tmp_path / slim_line.LOG_FILE)
    for kind in ("dense", "slim"):
        append_row(log, _row(kind, 0, 0.5, 1.0))
    trained = []

    def fake_train(model, masks, *a, **k):
        trained.append(sum(p.numel() for p in model.parameters()))
        return {"test_acc": 0.75, "train_seconds": [2.0]}

    monkeypatch.setattr("sparsepai.experiments.slim_line.train", fake_train)
    cfg = dataclasses.replace(CFG, train=dataclasses.replace(CFG.train, epochs=1))
    rows = run_slim_line(cfg, str(tmp_path), SlimLine("prospr", 0.9), progress=False)
    by = {r["kind"]: r for r in rows}
    assert len(trained) == 1 and by["dense"]["test_acc"] == 0.5  # only the slim one retrained
    assert by["slim"]["test_acc"] == 0.75
    assert by["slim"]["options"] == {"first_order": True, "cost_weighting": 0.5, "min_per_layer": 8}
    # and that row is reused by the next run
    monkeypatch.setattr("sparsepai.experiments.slim_line.train", _boom)
    assert run_slim_line(cfg, str(tmp_path), SlimLine("prospr", 0.9), progress=False) == rows


def _row(kind, seed, acc, secs, params=100):
    return {"kind": kind, "method": "prospr", "sparsity": 0.9, "seed": seed, "test_acc": acc,
            "train_seconds": secs, "params": params}


def test_summary_is_same_seed_ratios_and_needs_both():
    rows = [_row("dense", 0, 0.9, 10.0), _row("slim", 0, 0.8, 2.0, 10),
            _row("dense", 1, 0.7, 4.0), _row("slim", 1, 0.6, 4.0, 10),
            _row("dense", 2, 0.5, 8.0)]  # seed 2 has no slim run: left out
    s = summarize_line(rows)
    assert s["seeds"] == [0, 1]
    assert s["speedup"] == pytest.approx((10 / 2 + 4 / 4) / 2)  # not 7 / 3
    assert s["dense"]["acc"] == pytest.approx(0.8) and s["slim"]["acc"] == pytest.approx(0.7)
    assert s["dense"]["acc_std"] == pytest.approx(0.1) and s["slim"]["seconds"] == 3.0
    text = line_text(s)
    assert "3.00x faster" in text and "-10.00 points" in text and "90% of weights" in text
    assert summarize_line([_row("dense", 0, 0.9, 1.0)]) is None
    assert slim_line.LOG_FILE == "structured.jsonl"
