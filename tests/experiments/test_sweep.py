"""Sweeps resume only runs of identical settings, check everything before any work, and keep
every row of their log even after a line was cut mid-write."""

import json
import os

import pytest

from sparsepai.experiments import sweep
from sparsepai.experiments.sweep import SweepConfig, append_row, check_out_dir, load_rows, run_sweep
from sparsepai.experiments.train import TrainConfig

CFG = SweepConfig(model="smallconv", methods=("magnitude",), sparsities=(0.9,), seeds=(0,),
                  train=TrainConfig(epochs=1, optimizer="sgd"))


def _folder_with(tmp_path, cfg):
    import dataclasses

    out = tmp_path / "sweep"
    out.mkdir()
    (out / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=1))
    (out / "runs.jsonl").write_text(json.dumps({"method": "magnitude", "sparsity": 0.9,
                                                "seed": 0, "test_acc": 0.5}) + "\n")
    return out


def test_other_settings_are_refused(tmp_path, monkeypatch):
    import dataclasses

    out = _folder_with(tmp_path, CFG)
    check_out_dir(CFG, str(out))  # identical: resumable
    other = dataclasses.replace(CFG, model="lenet5",
                                train=dataclasses.replace(CFG.train, optimizer="adamw"))
    # the old rows must not be relabelled as lenet5/AdamW results: refused before any work
    monkeypatch.setattr(sweep, "run_one", _boom)
    monkeypatch.setattr("sparsepai.experiments.sweep.load_dataset", _boom)
    with pytest.raises(ValueError) as e:
        run_sweep(other, str(out), progress=False)
    msg = str(e.value)
    assert "holds a sweep with other settings" in msg and len(msg.splitlines()) == 1
    assert "model: 'smallconv' there, 'lenet5' now" in msg
    assert "train.optimizer: 'sgd' there, 'adamw' now" in msg
    assert sorted(os.listdir(out)) == ["config.json", "runs.jsonl"]


def test_settings_added_later_resume_at_their_defaults_only(tmp_path):
    """A folder written before a setting existed ran as its default: it resumes when the new
    config has that default there, and is refused when it does not."""
    import dataclasses

    out = _folder_with(tmp_path, CFG)
    old = json.loads((out / "config.json").read_text())
    del old["train"]["sparse_kernels"], old["ablations"]  # fields added after such folders
    (out / "config.json").write_text(json.dumps(old))
    check_out_dir(CFG, str(out))
    on = dataclasses.replace(CFG, train=dataclasses.replace(CFG.train, sparse_kernels=True))
    with pytest.raises(ValueError, match="train.sparse_kernels: '<unset>' there, True now"):
        check_out_dir(on, str(out))


def test_runs_without_config_are_refused(tmp_path):
    out = _folder_with(tmp_path, CFG)
    os.remove(out / "config.json")
    with pytest.raises(ValueError, match="holds runs.jsonl but no config.json"):
        check_out_dir(CFG, str(out))


def _boom(*a, **k):
    raise AssertionError("work started before the sweep's settings were checked")


def test_bad_methods_fail_before_any_training(tmp_path, monkeypatch):
    import dataclasses

    monkeypatch.setattr(sweep, "run_one", _boom)
    monkeypatch.setattr("sparsepai.experiments.sweep.load_dataset", _boom)
    bogus = dataclasses.replace(CFG, methods=("magnitude", "bogus"))
    with pytest.raises(ValueError, match="sweep: unknown pruning method 'bogus'; valid methods"):
        run_sweep(bogus, str(tmp_path / "out"), progress=False)
    labelled = dataclasses.replace(CFG, methods=("lt",), method_options=(("lt", "nope", {}),))
    with pytest.raises(ValueError, match="label 'lt': unknown pruning method 'nope'"):
        run_sweep(labelled, str(tmp_path / "out"), progress=False)
    with pytest.raises(ValueError, match="unknown model 'nosuch'"):
        run_sweep(dataclasses.replace(CFG, model="nosuch"), str(tmp_path / "out"))
    with pytest.raises(ValueError, match=r"sparsities must be in \[0, 1\)"):
        run_sweep(dataclasses.replace(CFG, sparsities=(1.0,)), str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_a_cut_line_does_not_swallow_the_next_row(tmp_path):
    log = str(tmp_path / "runs.jsonl")
    first = {"method": "snip", "sparsity": 0.9, "seed": 0, "test_acc": 0.8}
    second = {"method": "snip", "sparsity": 0.95, "seed": 0, "test_acc": 0.7}
    append_row(log, first)
    with open(log, "a") as f:  # a crash mid-write: half a row, no newline
        f.write(json.dumps(second)[:20])
    append_row(log, second)
    assert load_rows(log) == [first, second]
    append_row(log, first)  # a clean file gets no blank lines
    assert open(log).read().count("\n\n") == 0 and load_rows(log) == [first, second, first]


def test_a_folder_of_someone_elses_files_is_refused(tmp_path, monkeypatch):
    # a user's results.csv and table.txt used to be overwritten, exit 0
    monkeypatch.setattr(sweep, "run_one", _boom)
    monkeypatch.setattr("sparsepai.experiments.sweep.load_dataset", _boom)
    out = tmp_path / "mine"
    out.mkdir()
    (out / "results.csv").write_text("my results")
    (out / "table.txt").write_text("my table")
    with pytest.raises(ValueError, match=r"holds files that are not a sweep's \(\['results.csv', "
                                         r"'table.txt'\]\)"):
        run_sweep(CFG, str(out), progress=False)
    assert sorted(os.listdir(out)) == ["results.csv", "table.txt"]
    assert (out / "results.csv").read_text() == "my results"
    # only our own leftovers (a lock file, an interrupted write's temporary) are ignored
    os.remove(out / "results.csv")
    os.remove(out / "table.txt")
    (out / sweep.LOCK_FILE).write_text("12345\n")
    (out / ".results.csv.0123456789abcdef.tmp").write_text("half")
    check_out_dir(CFG, str(out))


_HOLDER = """
import sys, time
from sparsepai.experiments.sweep import out_dir_lock
with out_dir_lock(sys.argv[1]):
    print("holding", flush=True)
    time.sleep(600)
"""


def test_a_second_sweep_into_a_folder_in_use_is_refused(tmp_path, monkeypatch, capsys):
    import signal
    import subprocess
    import sys

    from tests.cli.helpers import main

    out = tmp_path / "busy"
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(out)], cwd=root,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        monkeypatch.setattr(sweep, "run_one", _boom)
        monkeypatch.setattr("sparsepai.experiments.sweep.load_dataset", _boom)
        with pytest.raises(ValueError, match=f"another sweep \\(process {holder.pid}\\) is "
                                             "writing this folder"):
            run_sweep(CFG, str(out), progress=False)
        code, _, err = main(capsys, "sweep", "--epochs", "1", "--seeds", "0", "--methods",
                            "magnitude", "--sparsities", "0.9", "--out", str(out))
        assert code == 2 and len(err.strip().splitlines()) == 1 and "another sweep" in err, err
        assert os.listdir(out) == [sweep.LOCK_FILE]
    finally:
        holder.send_signal(signal.SIGKILL)  # dies holding the lock: its file stays behind
        holder.wait()
    assert os.listdir(out) == [sweep.LOCK_FILE]
    with sweep.out_dir_lock(str(out)):  # a dead holder's lock never blocks
        assert (out / sweep.LOCK_FILE).read_text() == f"{os.getpid()}\n"
        with sweep.out_dir_lock(str(out)):  # nested in one process (the demo around its sweep)
            pass
        assert (out / sweep.LOCK_FILE).exists()
    assert os.listdir(out) == []  # removed on exit


def test_ablations_run_beside_each_method(tmp_path):
    """Every method pruned at init gets its shuffled, re-initialised and inverted variants; the
    shuffled and inverted masks keep the method's per-layer counts (checked on the rows' kept
    counts), and the re-initialised model trains other weights than the plain run."""
    import dataclasses

    import torch

    from sparsepai.experiments.data import load_dataset
    from sparsepai.masks.ablate import ABLATIONS

    cfg = dataclasses.replace(CFG, methods=("snip",), ablations=ABLATIONS, dense_baseline=False)
    assert sweep.row_labels(cfg) == ["snip", "snip+shuffle", "snip+reinit", "snip+invert"]
    rows = run_sweep(cfg, str(tmp_path / "s"), progress=False)
    by = {r["method"]: r for r in rows}
    assert set(by) == {"snip", "snip+shuffle", "snip+reinit", "snip+invert"}
    assert len({r["kept"] for r in rows}) == 1
    assert by["snip+invert"]["ablation"] == "invert" and "ablation" not in by["snip"]
    # the masks behind the rows, rebuilt: per-layer counts equal, positions not
    data = load_dataset("digits", None, seed=0)
    seen = {}

    def spy(model, masks, *a, **k):
        seen[len(seen)] = ({n: m.clone() for n, m in (masks or {}).items()},
                           {n: p.detach().clone() for n, p in model.named_parameters()})
        return {"test_acc": 0.0, "train_loss": [0.0], "test_acc_curve": [0.0],
                "train_seconds": [0.0]}

    old = sweep.train
    sweep.train = spy
    try:
        for label in sweep.row_labels(cfg):
            sweep.run_one(cfg, label, 0.9, 0, data)
    finally:
        sweep.train = old
    (plain, w_plain), (shuf, _), (re, w_re), (inv, _) = (seen[i] for i in range(4))
    for n in plain:
        assert int(shuf[n].sum()) == int(plain[n].sum()) == int(inv[n].sum())
        assert torch.equal(re[n], plain[n])  # reinit: the same masks
    assert any(not torch.equal(shuf[n], plain[n]) for n in plain)
    assert any(not torch.equal(inv[n], plain[n]) for n in plain)
    assert all(not torch.equal(w_re[n], w_plain[n]) for n in plain)  # ... on other weights
    table = (tmp_path / "s" / "table.txt").read_text()
    assert all(lab in table for lab in sweep.row_labels(cfg))


def test_bad_ablation_is_refused():
    import dataclasses

    with pytest.raises(ValueError, match="sweep: ablations must be distinct names"):
        sweep.check_config(dataclasses.replace(CFG, ablations=("shuffle", "flip")))
