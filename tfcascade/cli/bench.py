"""``tfcascade bench NAME [OPTIONS]``: runs ``python -m bench.NAME OPTIONS`` from a checkout.

The benchmarks live in the repository's ``bench/`` folder (not installed with the package);
running them through the CLI keeps TensorFlow's start-up logs quiet like every command.
"""

from __future__ import annotations

import importlib.util
import os
import runpy
import sys


def add_parser(subparsers):
    p = subparsers.add_parser("bench", help="run a benchmark of the checkout's bench/ (e.g. `bench topk --quick`)")
    p.add_argument("name", help="a module of bench/: topk, cascade, parity, serving, simulator, preprocess, scale, …")
    p.set_defaults(pass_through=True, beam_args=[])
    return p


def run(args) -> int:
    from tfcascade.cli.main import UsageError

    if os.path.isfile(os.path.join("bench", "__init__.py")) and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    if importlib.util.find_spec("bench") is None:
        raise UsageError("the benchmarks are the repository's bench/ folder: run `tfcascade bench` from a checkout")
    module = f"bench.{args.name}"
    if not args.name.isidentifier() or importlib.util.find_spec(module) is None:
        raise UsageError(f"name {args.name!r}: there is no bench/{args.name}.py")
    sys.argv = [module, *args.beam_args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)
    return 0
