"""``sparsepai demo`` / ``sweep``: a tiny end-to-end run, resumed with the same settings,
refused with others; bad methods and unwritable folders refused before any training."""

import json
import os

from tests.cli.helpers import cli, main, no_work

TINY = ["--epochs", "1", "--seeds", "0", "--methods", "magnitude", "snip", "--sparsities", "0.9"]


def test_demo_on_a_tiny_budget_resumes_only_identical_settings(tmp_path):
    out = tmp_path / "demo"
    p = cli("demo", *TINY, "--out", str(out))
    assert p.returncode == 0, p.stderr
    assert "magnitude" in p.stdout and "snip" in p.stdout and "dense" in p.stdout
    for f in ("config.json", "runs.jsonl", "results.csv", "results.json", "table.txt",
              "accuracy_vs_sparsity.png"):
        assert (out / f).exists(), f
    runs = [json.loads(x) for x in (out / "runs.jsonl").read_text().splitlines()]
    assert {(r["method"], r["sparsity"]) for r in runs} == {("dense", 0.0), ("magnitude", 0.9),
                                                            ("snip", 0.9)}
    for r in runs:
        if r["method"] != "dense":
            assert r["kept"] == r["prunable"] - round(0.9 * r["prunable"])
    # the structured line: dense against the 90% slim model, printed, logged and in results
    line = [json.loads(x) for x in (out / "structured.jsonl").read_text().splitlines()]
    assert [(r["kind"], r["seed"], r["sparsity"]) for r in line] == [("dense", 0, 0.9),
                                                                     ("slim", 0, 0.9)]
    assert line[1]["params"] < 0.2 * line[0]["params"]
    summary = json.loads((out / "results.json").read_text())["structured"]
    assert summary["dense"]["acc"] == line[0]["test_acc"]
    assert summary["slim"]["seconds"] == line[1]["train_seconds"]
    assert "structured, 90% of weights removed (prospr channels, sp.slim)" in p.stdout
    assert "x faster" in p.stdout and "x faster" in (out / "table.txt").read_text()
    # a second run resumes: nothing to redo
    p = cli("demo", *TINY, "--out", str(out))
    assert p.returncode == 0 and len((out / "runs.jsonl").read_text().splitlines()) == 3
    assert len((out / "structured.jsonl").read_text().splitlines()) == 2
    # other settings into the same folder: one line, exit 2, nothing touched (it used to report
    # the old smallconv/SGD rows as lenet5/AdamW results)
    before = {f: (out / f).read_bytes() for f in os.listdir(out)}
    p = cli("demo", *TINY, "--model", "lenet5", "--optimizer", "adamw", "--out", str(out))
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert "holds a sweep with other settings" in p.stderr and "'lenet5' now" in p.stderr
    assert {f: (out / f).read_bytes() for f in os.listdir(out)} == before


_WORK = [("sparsepai.experiments.sweep", "run_one"), ("sparsepai.experiments.sweep", "load_dataset"),
         ("sparsepai.experiments.data", "load_dataset")]


def test_bogus_method_fails_before_the_dense_baseline(capsys, monkeypatch, tmp_path):
    no_work(monkeypatch, *_WORK)
    code, _, err = main(capsys, "sweep", "--methods", "snip", "bogus", "--out",
                        str(tmp_path / "s"))
    assert code == 2 and "unknown pruning method 'bogus'" in err, err
    assert not (tmp_path / "s").exists()


def test_unwritable_out_folder(capsys, monkeypatch, tmp_path):
    no_work(monkeypatch, *_WORK)
    (tmp_path / "f").write_text("")
    code, _, err = main(capsys, "demo", "--out", str(tmp_path / "f"))
    assert code == 2 and "exists and is not a folder" in err
    code, _, err = main(capsys, "sweep", "--out", str(tmp_path / "f" / "sub"))
    assert code == 2 and "cannot be written" in err


def test_ablations_option(capsys, monkeypatch, tmp_path):
    from sparsepai.cli import sweep as cli_sweep

    no_work(monkeypatch, *_WORK)
    code, _, err = main(capsys, "sweep", "--ablations", "shuffle,flip", "--out",
                        str(tmp_path / "s"))
    assert code == 2 and "--ablations" in err and "flip" in err, err
    import argparse

    p = argparse.ArgumentParser()
    cli_sweep.add_arguments(p)
    args = p.parse_args(["--ablations", "shuffle, invert", "--out", str(tmp_path / "t")])
    assert cli_sweep.config(args).ablations == ("shuffle", "invert")
