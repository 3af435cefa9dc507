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


class UsageError(ValueError):
    """A command-line argument that cannot work: reported in one line, exit status 2."""


def require_folder(path: str, option: str, holding: str, made_by: str) -> None:
    """Refuses a local ``path`` that is not a folder holding ``holding`` — before TensorFlow is
    imported, so the error is the only output. Remote paths (``gs://``…) are left to the reader.

    Raises:
      UsageError: naming ``option``, the path and the command that makes such a folder.
    """
    import os

    if "://" in path:
        return
    if not os.path.isdir(path):
        raise UsageError(f"{option} {path}: no such folder (give the output of `{made_by}`)")
    if not os.path.exists(os.path.join(path, holding)):
        raise UsageError(f"{option} {path}: no {holding} there (give the output of `{made_by}`)")


def main(argv: list[str] | None = None) -> int:
    """Runs one command. Errors are one line on stderr — exit 2 for usage errors (arguments),
    1 for runtime errors — and the traceback is shown only with ``--debug``, which also leaves
    TensorFlow's C++ start-up logs on (as does setting ``TF_CPP_MIN_LOG_LEVEL``)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    if not debug:
        from tfcascade.cli.quiet import install

        install()  # TensorFlow's C++ start-up lines stay off the terminal
    # Import only the module of the command being run (help lists them all).
    chosen = [argv[0]] if argv and argv[0] in COMMANDS else None
    parser = build_parser(chosen)
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
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
    except KeyboardInterrupt:
        print(f"tfcascade {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 (every error becomes one line; --debug shows the traceback)
        if debug:
            raise
        usage = isinstance(err, UsageError)
        hint = "" if usage else " (--debug shows the traceback)"
        print(f"tfcascade {args.command}: error: {one_line(err)}{hint}", file=sys.stderr)
        return 2 if usage else 1


def one_line(err: BaseException) -> str:
    """An exception as one line: the first line of its message (TensorFlow's ``message``,
    without its "Graph execution error:" header), with the type unless it is a plain bad-value
    or file error."""
    message = getattr(err, "message", None) or str(err)
    lines = [line.strip() for line in message.splitlines() if line.strip() not in ("", "Graph execution error:")]
    text = lines[0] if lines else ""
    return text if isinstance(err, (ValueError, OSError)) and text else f"{type(err).__name__}: {text}"


if __name__ == "__main__":
    sys.exit(main())
