"""Bad arguments found before the data loads: one line, exit status 2."""

import pytest

from tests.cli.helpers import main, no_work

_WORK = [("sparsepai.cli.common", "model_and_data"), ("sparsepai.experiments.data", "load_dataset"),
         ("sparsepai.experiments.sweep", "load_dataset"),
         ("sparsepai.api", "prune"), ("sparsepai.autosparse.irp", "irp"),
         ("sparsepai.autosparse.training", "train_predictor"),
         ("sparsepai.experiments.sweep", "run_one")]


@pytest.mark.parametrize("args,says", [
    (["prune", "--method", "prospr", "--sparsity", "0.5", "--option", "meta_steps=-3"],
     "--option: method 'prospr': option 'meta_steps' must be >= 0, got -3"),
    (["prune", "--method", "snip", "--sparsity", "0.5", "--option", "nosuch=1"],
     "method 'snip' has no options ['nosuch']"),
    (["prune", "--method", "grasp", "--structured", "--sparsity", "0.5"],
     "structured pruning supports the methods"),
    (["irp", "--prune-fraction", "1.0"], "argument --prune-fraction: must be in (0, 1), got 1.0"),
    (["train-predictor", "--irp", ".", "--holdout-fraction", "1.5"],
     "argument --holdout-fraction: must be in (0, 1), got 1.5"),
    (["bench", "--sizes", "1e30"], "argument --sizes: a size must be at most 1e+10 scores"),
    (["bench", "--sizes", "inf"], "argument --sizes: a size must be at most"),
    (["sweep", "--seeds", "0", "0", "--methods", "snip"], "sweep: seeds repeat [0]"),
    (["sweep", "--sparsities", "0.5", "0.5", "--methods", "snip"],
     "sweep: sparsities repeat [0.5]"),
    (["demo", "--methods", "snip", "snip"], "sweep: methods repeat ['snip']"),
])
def test_refused_before_any_work(capsys, monkeypatch, tmp_path, args, says):
    no_work(monkeypatch, *_WORK)
    monkeypatch.chdir(tmp_path)
    code, _, err = main(capsys, *args, *(["--out", str(tmp_path / "o")]
                                        if args[0] in ("sweep", "demo") else []))
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert says in err, err
    assert not (tmp_path / "o").exists()


def test_predictor_config_refuses_a_holdout_fraction_outside_0_1():
    from sparsepai.autosparse.predictor import PredictorConfig

    for bad in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match=f"holdout_fraction must be in \\(0, 1\\), got {bad}"):
            PredictorConfig(holdout_fraction=bad)
