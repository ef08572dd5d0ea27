"""The ``sparsepai`` command line (also ``python -m sparsepai``), one module per command, each
with ``HELP``, ``DESCRIPTION``, ``add_arguments(parser)`` and ``run(args) -> exit status``:

    sparsepai demo    the main job: every method at 90/95/98/99% sparsity, a few seeds, on the
                      embedded digits dataset, trained and evaluated; a table, CSV/JSON and a
                      plot of accuracy against sparsity
    sparsepai prune   prune a model at initialization, masks to a safetensors file
    sparsepai train   train a model (optionally with masks from a file), report test accuracy
    sparsepai sweep   the demo's comparison for any model, dataset, methods and sparsities
    sparsepai bench   time sp.topk_mask against torch.kthvalue(cat) at chosen sizes
    sparsepai irp     iterative rewind pruning (AutoSparse's data), crash-safe and resumable
    sparsepai ccc     concordance of the survival scores of two IRP runs
    sparsepai train-predictor   fit an AutoSparse predictor to IRP runs
    sparsepai info    versions, build, CPU ISA, CUDA/Triton, and the backend of each op

Errors are one line on stderr: exit status 2 for bad arguments (checked before any work), 1 for
failures; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from sparsepai.cli.common import UsageError

# command -> module of sparsepai.cli
COMMANDS = {"demo": "demo", "prune": "prune", "train": "train", "sweep": "sweep",
            "bench": "bench", "irp": "irp", "ccc": "ccc", "train-predictor": "train_predictor",
            "info": "info"}
# failures whose message says it all; anything else also points at --debug
_PLAIN = (ValueError, TypeError, OSError, FloatingPointError)


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        # one line, not argparse's usage block
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="sparsepai", description="Pruning at initialization.")
    ap.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    sub = ap.add_subparsers(dest="cmd", required=True, parser_class=_Parser)
    for cmd, module in COMMANDS.items():
        mod = importlib.import_module(f"sparsepai.cli.{module}")
        p = sub.add_parser(cmd, help=mod.HELP, description=mod.DESCRIPTION)
        mod.add_arguments(p)
        # SUPPRESS: without the flag here, the top-level --debug stands
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show tracebacks of errors")
        p.set_defaults(run=mod.run)
    return ap


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    if isinstance(exc, KeyError) and exc.args:
        text = repr(exc.args[0])
    line = text.splitlines()[0] if text else ""
    if not isinstance(exc, _PLAIN) or not line:
        line = f"{type(exc).__name__}: {line}" if line else type(exc).__name__
        line += " (--debug shows the traceback)"
    return line


def main(argv=None) -> int:
    """Run the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f"sparsepai {args.cmd}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the one place every failure becomes one line
        if args.debug:
            raise
        print(f"sparsepai {args.cmd}: error: {_one_line(exc)}", file=sys.stderr)
        return 2 if isinstance(exc, UsageError) else 1


__all__ = ["COMMANDS", "UsageError", "build_parser", "main"]
