"""Running the command line: in a subprocess (what users run) or in process (cheaper: no
interpreter start-up, and expensive steps can be replaced to prove they never start)."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def cli(*args):
    """``python -m sparsepai ARGS`` -> CompletedProcess (text stdout/stderr)."""
    return subprocess.run([sys.executable, "-m", "sparsepai", *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=600,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))


def main(capsys, *args):
    """``sparsepai.cli.main(ARGS)`` in process -> (exit status, stdout, stderr)."""
    from sparsepai.cli import main as cli_main

    try:
        code = cli_main(list(args))
    except SystemExit as exc:  # argparse's errors and --help
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def no_work(monkeypatch, *targets):
    """Make each ``(module, attribute)`` fail if called: a check that must come first did not."""
    import importlib

    def boom(*a, **k):
        raise AssertionError("expensive work started before the arguments were checked")

    for module, attr in targets:
        monkeypatch.setattr(importlib.import_module(module), attr, boom)
