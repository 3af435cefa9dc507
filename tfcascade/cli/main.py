"""The ``tfcascade`` command line.

Each sub-command lives in its own module ``tfcascade.cli.<name>`` that defines
``add_parser(subparsers)`` (returns the argparse parser) and ``run(args) -> int``. A command
that sets ``pass_through=True`` as a parser default receives unknown options (e.g. Beam
pipeline options) in ``args.beam_args``. Modules are
imported only when their command runs, so ``tfcascade --help`` stays fast and TFX / Beam are
loaded only by the commands that need them.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# command name -> module under tfcascade.cli
COMMANDS = {
    "simulate": "simulate",
    "preprocess": "preprocess",
    "train": "train",
    "evaluate": "evaluate",
    "compare": "compare",
    "pipeline": "pipeline",
    "export": "export",
    "topkgat": "topkgat",
    "bench": "bench",
}


def build_parser(names: list[str] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tfcascade",
        description="Train and serve multi-stage cascade rankers with differentiable top-K.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in names or COMMANDS:
        module = _load(name)
        if module is None:
            continue
        module.add_parser(sub)
    return parser


def _load(name: str):
    try:
        return importlib.import_module(f"tfcascade.cli.{COMMANDS[name]}")
    except ModuleNotFoundError as err:
        if err.name == f"tfcascade.cli.{COMMANDS[name]}":
            return None  # command not available in this build
        raise


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    # Import only the module of the command being run (help lists them all).
    chosen = [argv[0]] if argv and argv[0] in COMMANDS else None
    parser = build_parser(chosen)
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        if not getattr(args, "pass_through", False):
            parser.error(f"unrecognized arguments: {' '.join(unknown)}")
        args.beam_args = list(getattr(args, "beam_args", None) or []) + unknown
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    module = _load(args.command)
    try:
        return int(module.run(args) or 0)
    except _data_errors() as err:  # bad input the data layer named precisely: one line, no traceback
        print(f"tfcascade {args.command}: error: {err}", file=sys.stderr)
        return 1


def _data_errors() -> tuple[type[Exception], ...]:
    """Errors that name the bad input (evaluated only once something was raised)."""
    from tfcascade.data.fingerprint import DataMismatchError
    from tfcascade.data.schema import SchemaError
    from tfcascade.data.tfdata import EmptySplitError

    return (DataMismatchError, EmptySplitError, SchemaError, FileExistsError)


if __name__ == "__main__":
    sys.exit(main())
