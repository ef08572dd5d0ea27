"""The command line as a whole: help for every command, and errors as one line on stderr (exit
status 2 for bad arguments, 1 for failures), with ``--debug`` for the traceback."""

import pytest

from tests.cli.helpers import cli, main


def test_help_describes_every_command():
    p = cli("--help")
    assert p.returncode == 0
    for cmd, option in (("demo", "--sparsities"), ("prune", "--method"), ("train", "--masks"),
                        ("sweep", "--seeds"), ("bench", "--sizes"), ("irp", "--rounds"),
                        ("ccc", "--json"), ("train-predictor", "--backbone")):
        assert cmd in p.stdout
    from sparsepai.cli import build_parser

    # in process: eight more interpreter start-ups cost more than they check
    sub = next(a for a in build_parser()._actions if a.dest == "cmd").choices
    for cmd, option in (("demo", "--sparsities"), ("prune", "--method"), ("train", "--masks"),
                        ("sweep", "--seeds"), ("bench", "--sizes"), ("irp", "--rounds"),
                        ("ccc", "--json"), ("train-predictor", "--backbone")):
        text = sub[cmd].format_help()
        assert option in text and "--debug" in text, (cmd, text)


def _one_line(err):
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_unknown_model_is_one_line_exit_2():
    # a subprocess, as users meet it (the in-process tests below cover the other cases)
    p = cli("prune", "--model", "resnet1000", "--method", "magnitude", "--sparsity", "0.5")
    assert p.returncode == 2
    line = _one_line(p.stderr)
    assert line.startswith("sparsepai prune: error: unknown model 'resnet1000'"), line
    assert "valid models: resnet18" in line


@pytest.mark.parametrize("cmd", ["prune", "train", "sweep", "demo", "irp"])
def test_unknown_model_every_command(capsys, cmd):
    extra = ["--method", "magnitude", "--sparsity", "0.5"] if cmd == "prune" else []
    code, out, err = main(capsys, cmd, "--model", "nosuch", *extra)
    assert code == 2 and "unknown model 'nosuch'" in _one_line(err)


def test_argparse_errors_are_one_line_exit_2(capsys):
    code, _, err = main(capsys, "prune", "--method", "snip", "--sparsity", "1.5")
    assert code == 2 and "sparsity must be in [0, 1)" in _one_line(err)
    code, _, err = main(capsys, "prune", "--method", "nosuch", "--sparsity", "0.5")
    assert code == 2 and "valid methods" in _one_line(err)
    code, _, err = main(capsys, "nosuchcommand")
    assert code == 2 and "invalid choice" in _one_line(err)


def test_missing_data_root(capsys, tmp_path):
    code, _, err = main(capsys, "train", "--dataset", "mnist", "--data-root",
                        str(tmp_path / "nowhere"), "--epochs", "1")
    assert code == 2 and f"--data-root {tmp_path / 'nowhere'}: no such folder" in _one_line(err)
    code, _, err = main(capsys, "prune", "--dataset", "mnist", "--method", "snip",
                        "--sparsity", "0.5")
    assert code == 2 and "needs --data-root" in _one_line(err)
    # a folder without the files: found while loading, a failure (exit 1), still one line
    code, _, err = main(capsys, "train", "--dataset", "mnist", "--data-root", str(tmp_path),
                        "--epochs", "1")
    assert code == 1 and str(tmp_path) in _one_line(err)


def test_corrupt_mask_file(capsys, tmp_path):
    bad = tmp_path / "m.safetensors"
    bad.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{\"a\":1}")
    code, _, err = main(capsys, "train", "--masks", str(bad), "--epochs", "1")
    line = _one_line(err)
    assert code == 1 and str(bad) in line and "not a readable mask file" in line
    code, _, err = main(capsys, "train", "--masks", str(tmp_path / "none.safetensors"))
    assert code == 2 and "no such file" in _one_line(err)


def test_debug_shows_the_traceback(capsys, tmp_path):
    bad = tmp_path / "m.safetensors"
    bad.write_bytes(b"garbage")
    with pytest.raises(ValueError, match="not a readable mask file"):
        main(capsys, "--debug", "train", "--masks", str(bad), "--epochs", "1")
    with pytest.raises(ValueError, match="not a readable mask file"):
        main(capsys, "train", "--masks", str(bad), "--epochs", "1", "--debug")


def test_unexpected_errors_name_their_type(capsys, monkeypatch):
    import sparsepai.cli.bench as bench

    def broken(args):
        raise RuntimeError("kernel exploded\nsecond line")

    monkeypatch.setattr(bench, "run", broken)
    code, _, err = main(capsys, "bench")
    line = _one_line(err)
    assert code == 1 and "RuntimeError: kernel exploded" in line and "--debug" in line
