"""Iterative rewind pruning: the schedule, survival counting against a rank oracle, the initial
gradients against a full-batch computation, crash safety (an exception injected at every write
and inside training, then resume: byte-identical folders) and foreign checkpoint folders."""

import copy
import importlib
import os

import pytest
import torch

from sparsepai import _io
from sparsepai.autosparse import IRPDataset, irp, remaining_schedule
from tests.autosparse.helpers import folder_bytes, tiny_conv, tiny_data, tiny_model

IRP = dict(rounds=3, epochs_per_round=1, prune_fraction=0.4, batch_size=16, progress=False)
# every training step's loss is checked by base.batch_loss (the one loop, recipes.train_pass)
base_module = importlib.import_module("sparsepai.core.loss")


def test_schedule_prunes_a_fraction_of_the_remaining():
    # 100 -> 100 - 20 = 80 -> 80 - 16 = 64 -> 64 - round(12.8) = 51
    assert remaining_schedule(100, 3, 0.2) == [80, 64, 51]
    s = remaining_schedule(10_000, 10, 0.3)
    assert s[-1] == pytest.approx(10_000 * 0.7 ** 10, abs=10)
    assert all(a > b for a, b in zip(s, s[1:]))


def test_survival_counts_against_a_rank_oracle(tmp_path):
    # no training (0 epochs): the magnitude criterion is |w_init| every round, so a weight's
    # survival is fixed by its global rank: the top n_R survive R rounds, the next n_{R-1} - n_R
    # survive R - 1, ...
    model = tiny_model()
    ds = irp(model, tiny_data(), checkpoint_dir=str(tmp_path / "r"), **{**IRP,
                                                                          "epochs_per_round": 0})
    names = ds.names
    assert names == ["0.weight", "2.weight", "4.weight"]
    w = torch.cat([dict(model.named_parameters())[n].detach().reshape(-1).abs() for n in names])
    order = torch.argsort(w, descending=True, stable=True)
    n = w.numel()
    sched = [n] + remaining_schedule(n, 3, 0.4)
    expected = torch.zeros(n, dtype=torch.int32)
    for r in range(1, 4):
        expected[order[:sched[r]]] += 1
    got = torch.cat([ds.survival[k].reshape(-1) for k in names])
    assert torch.equal(got, expected)
    # masks nested, counts as scheduled, survival = sum of the masks
    masks = ds.masks
    for r in range(3):
        assert sum(int(m.sum()) for m in masks[r].values()) == sched[r + 1]
        if r:
            assert all(not bool((masks[r][k] & ~masks[r - 1][k]).any()) for k in names)
    for k in names:
        assert torch.equal(ds.survival[k], sum(m[k].int() for m in masks).int())


def test_training_changes_survival_and_leaves_the_caller_alone(tmp_path):
    model = tiny_conv()
    before = copy.deepcopy(model.state_dict())
    model.eval()
    rng = torch.get_rng_state()
    ds = irp(model, tiny_data(conv=True), checkpoint_dir=str(tmp_path / "r"), **IRP)
    assert not model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert torch.equal(torch.get_rng_state(), rng)
    assert ds.layer_types == {"0.weight": "Conv2d", "4.weight": "Linear"}
    for k in ds.names:  # recorded initial values are the model's
        assert torch.equal(ds.params[k], before[k])
    assert "train mode" in ds.description["grad_mode"]


def test_initial_grads_are_the_full_data_mean_loss_gradient(tmp_path):
    model = tiny_model()
    data = tiny_data(n=50)  # 50 = 3 batches of 16 and one of 2: unequal batches
    ds = irp(model, data, checkpoint_dir=str(tmp_path / "r"), **IRP)
    x, y = data.tensors
    ref = copy.deepcopy(model)
    loss = torch.nn.functional.cross_entropy(ref(x), y)
    params = dict(ref.named_parameters())
    gs = torch.autograd.grad(loss, [params[k] for k in ds.names])
    for k, g in zip(ds.names, gs):
        torch.testing.assert_close(ds.grads[k], g, rtol=1e-5, atol=1e-7)
    assert ds.description["grad_samples"] == 50


def test_load_is_lazy_and_unfinished_runs_are_refused(tmp_path):
    d = str(tmp_path / "r")
    irp(tiny_model(), tiny_data(), checkpoint_dir=d, **IRP)
    ds = IRPDataset.load(d)
    assert ds._cache == {}
    assert ds.rounds == 3 and set(ds.survival) == set(ds.names)
    os.remove(os.path.join(d, "dataset.json"))
    with pytest.raises(ValueError, match="not finished"):
        IRPDataset.load(d)
    with pytest.raises(FileNotFoundError):
        IRPDataset.load(str(tmp_path / "nothing"))


class Boom(Exception):
    pass


def _reference(tmp_path, make, data):
    ref = str(tmp_path / "ref")
    irp(make(), data, checkpoint_dir=ref, **IRP)
    return folder_bytes(ref)


@pytest.mark.parametrize("where", ["before_rename", "after_rename"])
def test_resume_after_a_crash_at_every_write(tmp_path, monkeypatch, where):
    data = tiny_data(conv=True)
    expected = _reference(tmp_path, tiny_conv, data)
    writes = len(expected) + 1  # + the masks/ folder creation is not a write; +1 margin
    real = _io.atomic_write_bytes
    for k in range(writes):
        calls = {"n": 0}

        def failing(path, payload, k=k, calls=calls):
            calls["n"] += 1
            if calls["n"] - 1 == k:
                if where == "before_rename":  # the temporary file is written, not renamed
                    fd, _ = _io._open_tmp(path)
                    with os.fdopen(fd, "wb") as f:
                        f.write(payload[: len(payload) // 2])
                    raise Boom(path)
                real(path, payload)
                raise Boom(path)
            return real(path, payload)

        d = str(tmp_path / f"{where}{k}")
        monkeypatch.setattr(_io, "atomic_write_bytes", failing)
        crashed = True
        try:
            irp(tiny_conv(), data, checkpoint_dir=d, **IRP)
            crashed = False
        except Boom:
            pass
        monkeypatch.setattr(_io, "atomic_write_bytes", real)
        irp(tiny_conv(), data, checkpoint_dir=d, **IRP)  # resume
        assert folder_bytes(d) == expected, (where, k)
        if k < len(expected):
            assert crashed, k


def test_resume_after_a_crash_inside_training(tmp_path, monkeypatch):
    data = tiny_data(conv=True)
    expected = _reference(tmp_path, tiny_conv, data)
    real = base_module.check_finite
    for k in (0, 2, 3, 7):  # inside round 1, 2, 2, 3 (3 batches per epoch)
        calls = {"n": 0}

        def failing(loss, what, k=k, calls=calls):
            if what.startswith("irp round"):  # training steps only
                calls["n"] += 1
                if calls["n"] - 1 == k:
                    raise Boom(what)
            return real(loss, what)

        d = str(tmp_path / f"t{k}")
        monkeypatch.setattr(base_module, "check_finite", failing)
        with pytest.raises(Boom):
            irp(tiny_conv(), data, checkpoint_dir=d, **IRP)
        monkeypatch.setattr(base_module, "check_finite", real)
        irp(tiny_conv(), data, checkpoint_dir=d, **IRP)
        assert folder_bytes(d) == expected, k


def test_resume_after_sigkill_in_a_subprocess(tmp_path):
    from benchmarks.irp_resume_kill import run_kill_test

    res = run_kill_test(["--model", "lenet5", "--dataset", "digits", "--rounds", "3",
                         "--epochs-per-round", "1", "--prune-fraction", "0.3"], 2, 0,
                        str(tmp_path), log=lambda *a: None, threads=1)
    assert res["kills_landed_in_final_sequence"] == 2
    assert res["identical"], res["differing_files"]
    assert res["files"] >= 6


def test_a_folder_with_another_run_is_refused_and_untouched(tmp_path):
    d = str(tmp_path / "r")
    data = tiny_data()
    irp(tiny_model(), data, checkpoint_dir=d, **IRP)
    before = folder_bytes(d)
    with pytest.raises(ValueError, match="another run.*config.lr"):
        irp(tiny_model(), data, checkpoint_dir=d, **{**IRP, "lr": 0.01})
    with pytest.raises(ValueError, match="another run.*model_sha256"):
        irp(tiny_model(seed=5), data, checkpoint_dir=d, **IRP)
    with pytest.raises(ValueError, match="another run.*first_batch_sha256"):
        irp(tiny_model(), tiny_data(seed=9), checkpoint_dir=d, **IRP)
    with pytest.raises(FileExistsError, match="resume=True"):
        irp(tiny_model(), data, checkpoint_dir=d, resume=False, **IRP)
    assert folder_bytes(d) == before
    # a folder holding someone else's files
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not an IRP run"):
        irp(tiny_model(), data, checkpoint_dir=str(other), **IRP)
    assert os.listdir(other) == ["notes.txt"] and (other / "notes.txt").read_text() == "keep me"


def test_bad_arguments():
    with pytest.raises(ValueError, match="prune_fraction"):
        irp(tiny_model(), tiny_data(), checkpoint_dir="unused", rounds=2, epochs_per_round=1,
            prune_fraction=1.0)
    with pytest.raises(ValueError, match="criterion"):
        irp(tiny_model(), tiny_data(), checkpoint_dir="unused", rounds=2, epochs_per_round=1,
            prune_fraction=0.5, criterion="nope")


def test_snip_criterion_runs_and_differs(tmp_path):
    data = tiny_data()
    a = irp(tiny_model(), data, checkpoint_dir=str(tmp_path / "m"), **IRP)
    b = irp(tiny_model(), data, checkpoint_dir=str(tmp_path / "s"), criterion="snip", **IRP)
    assert b.description["config"]["criterion"] == "snip"
    assert any(not torch.equal(a.survival[k], b.survival[k]) for k in a.names)


def test_a_generator_gives_the_run_a_list_gives(tmp_path):
    # the fingerprint used to consume the first batch: the gradients came from the rest, and a
    # rerun with the list "resumed" on them
    x, y = tiny_data().tensors
    data = [(x[i:i + 8], y[i:i + 8]) for i in range(0, len(y), 8)]
    ref = str(tmp_path / "list")
    irp(tiny_model(), data, checkpoint_dir=ref, **IRP)
    gen = str(tmp_path / "gen")
    irp(tiny_model(), (b for b in data), checkpoint_dir=gen, **IRP)
    assert folder_bytes(gen) == folder_bytes(ref)
    irp(tiny_model(), data, checkpoint_dir=gen, **IRP)  # resumes: the same run
    assert folder_bytes(gen) == folder_bytes(ref)


def test_a_round_file_of_another_run_is_refused(tmp_path):
    import shutil

    from sparsepai.autosparse.dataset import round_path

    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    irp(tiny_model(), tiny_data(), checkpoint_dir=a, **IRP)
    irp(tiny_model(), tiny_data(), checkpoint_dir=b, **{**IRP, "seed": 1})
    # run a, as if killed after round 1, with round 1 copied in from run b
    for f in ("dataset.json", "survival.safetensors"):
        os.remove(os.path.join(a, f))
    for r in (2, 3):
        os.remove(round_path(a, r))
    shutil.copyfile(round_path(b, 1), round_path(a, 1))
    before = folder_bytes(a)
    with pytest.raises(ValueError) as e:
        irp(tiny_model(), tiny_data(), checkpoint_dir=a, **IRP)
    msg = str(e.value)
    assert msg.startswith(f"{round_path(a, 1)}: belongs to another IRP run")
    assert len(msg.splitlines()) == 1 and folder_bytes(a) == before
    # a truncated round file: named, not a raw safetensors error
    data = open(round_path(b, 1), "rb").read()
    with open(round_path(a, 1), "wb") as f:
        f.write(data[: len(data) // 2])
    with pytest.raises(ValueError, match=f"{round_path(a, 1)}: not a readable IRP round file"):
        irp(tiny_model(), tiny_data(), checkpoint_dir=a, **IRP)


def test_a_truncated_survival_file_is_named(tmp_path):
    d = str(tmp_path / "r")
    irp(tiny_model(), tiny_data(), checkpoint_dir=d, **IRP)
    path = os.path.join(d, "survival.safetensors")
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[:-20])
    with pytest.raises(ValueError, match=f"{path}: not a readable IRP dataset file"):
        IRPDataset.load(d).survival


def test_a_loss_fn_that_is_not_callable_is_refused_before_any_file(tmp_path):
    with pytest.raises(TypeError, match=r"irp: loss_fn must be callable .* got int 3"):
        irp(tiny_model(), tiny_data(), checkpoint_dir=str(tmp_path / "r"), loss_fn=3, **IRP)
    assert not (tmp_path / "r").exists()


def test_a_round_file_without_a_run_fingerprint_is_refused(tmp_path):
    from sparsepai.autosparse.dataset import round_path

    d = str(tmp_path / "r")
    irp(tiny_model(), tiny_data(), checkpoint_dir=d, **IRP)
    for f in ("dataset.json", "survival.safetensors"):
        os.remove(os.path.join(d, f))
    masks, meta = _io.read_tensors(round_path(d, 3))
    del meta["run_sha256"]
    _io.save_tensors(round_path(d, 3), masks, meta)
    with pytest.raises(ValueError, match=f"{round_path(d, 3)}: records no run fingerprint"):
        irp(tiny_model(), tiny_data(), checkpoint_dir=d, **IRP)
