"""``tfcascade train``: train one cascade on preprocessed data."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tfcascade.models.spec import CascadeSpec
    from tfcascade.training import TrainConfig


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def _names(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def add_spec_options(p) -> None:
    """The cascade's shape (``CascadeSpec``): --stages, --stage-models, --qs, --k."""
    p.add_argument("--stages", type=int, default=2, choices=(2, 3))
    p.add_argument("--stage-models", type=_names, default=None,
                   help="stage kinds earliest first, e.g. dssm,tarq,din (default dssm,din / dssm,mlp,din)")
    p.add_argument("--qs", type=_ints, default=None,
                   help="items each stage keeps, e.g. 30,20 (default 30,20 / 40,30,20)")
    p.add_argument("--k", type=int, default=None, help="ground-truth size K and items returned (default 10)")


def add_train_options(p) -> None:
    """``--data``, the spec's options and the ``TrainConfig`` options but loss and seed."""
    p.add_argument("--data", required=True, help="preprocessing output folder")
    add_spec_options(p)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--adam-epsilon", type=float, default=1e-8,
                   help="Adam's epsilon (default 1e-8: PyTorch's, as the reference code; Keras' is 1e-7)")
    p.add_argument("--temperature", type=float, default=None, help="operator temperature of the loss")
    p.add_argument("--embedding-dim", type=int, default=8)
    p.add_argument("--initialization", default="reference", choices=("reference", "keras"),
                   help="how the stage models' weights start: PyTorch's defaults, as the LCRON / DFTopK reference "
                        "code (default), or Keras' defaults")
    p.add_argument("--steps-per-epoch", type=int, default=None)
    p.add_argument("--sampled-negatives", type=int, default=0,
                   help="append this many negatives sampled from the batch's other items to each training list")
    p.add_argument("--negative-draw", default="items", choices=("items", "slots"),
                   help="sampled negatives: distinct items of the batch, or other requests' slots (DFTopK's code)")


def add_parser(subparsers):
    p = subparsers.add_parser("train", help="train a cascade (progress bar, TensorBoard, checkpoints, resume)")
    add_train_options(p)
    p.add_argument("--loss", default="lcron", help="bce icc rankflow fs_ranknet fs_lambdaloss arf arf_v2 lcron dftopk lapsum")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model-dir", required=True)
    p.add_argument("--restart", action="store_true",
                   help="start over even if --model-dir holds an interrupted run's backup (otherwise a rerun "
                        "resumes it, and is refused if its options differ)")
    p.add_argument("--ps-min-shard-rows", type=int, default=None,
                   help="parameter-server clusters: split a table along its rows across the parameter servers "
                        "when each shard gets at least this many rows (default 8192)")
    return p


# Fields of CascadeSpec / TrainConfig whose command-line option has another name.
_OPTION_NAMES = {"stage_kinds": "--stage-models"}


def spec_from_args(args) -> CascadeSpec:
    """The ``CascadeSpec`` of :func:`add_spec_options`' options.

    Raises:
      UsageError: naming the option and the problem.
    """
    from tfcascade.models.spec import CascadeSpec

    with usage_errors():
        return CascadeSpec.default(args.stages, stage_kinds=args.stage_models, qs=args.qs, k=args.k)


def config_from_args(args, **options) -> TrainConfig:
    """The ``TrainConfig`` of :func:`add_train_options`' options, and ``options``.

    Raises:
      UsageError: naming the option and the problem.
    """
    from tfcascade.training import TrainConfig

    with usage_errors():
        return TrainConfig.from_dict({
            "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
            "adam_epsilon": args.adam_epsilon, "temperature": args.temperature,
            "embedding_dim": args.embedding_dim, "initialization": args.initialization,
            "steps_per_epoch": args.steps_per_epoch,
            "sampled_negatives": args.sampled_negatives, "negative_draw": args.negative_draw, **options})


@contextlib.contextmanager
def usage_errors(option_names: dict[str, str] | None = None):
    """A ValueError of CascadeSpec / TrainConfig as a UsageError, prefixed with the option it
    names (its first word: ``--lr: lr must be …``).

    Args:
      option_names: field → option, where a command's option is not ``--<field>``.
    """
    import dataclasses

    from tfcascade.cli.main import UsageError
    from tfcascade.models.spec import CascadeSpec
    from tfcascade.training import TrainConfig

    try:
        yield
    except ValueError as err:
        field = str(err).split(" ", 1)[0].split("[", 1)[0]
        known = {f.name for cls in (CascadeSpec, TrainConfig) for f in dataclasses.fields(cls)} | {"stages"}
        option = {**_OPTION_NAMES, **(option_names or {})}.get(field, "--" + field.replace("_", "-"))
        raise UsageError(f"{option}: {err}" if field in known else str(err)) from None


def run(args) -> int:
    """Trains as ``TF_CONFIG`` says: alone, on a data-parallel cluster, or as the chief of a
    parameter-server cluster; a ``worker`` or ``ps`` task of a parameter-server cluster runs its
    TensorFlow server instead, until it is killed (one line on stderr says so)."""
    from tfcascade.cli.main import UsageError, require_folder

    if os.environ.get("TF_CONFIG", "").strip():  # (importing distribution imports TensorFlow)
        from tfcascade.training.distribution import run_server, serves_cluster

        if serves_cluster():  # before anything else: a parameter server need not see the data
            run_server(lambda line: print(line, file=sys.stderr, flush=True))
            return 0
    require_folder(args.data, "--data", "metadata.json", "tfcascade preprocess")
    spec = spec_from_args(args)
    config = config_from_args(args, loss=args.loss, seed=args.seed)
    if args.ps_min_shard_rows is not None and args.ps_min_shard_rows < 1:
        raise UsageError(f"--ps-min-shard-rows must be an integer > 0, got --ps-min-shard-rows "
                         f"{args.ps_min_shard_rows}")
    from tfcascade.training import train
    from tfcascade.training.distribution import (
        DEFAULT_MIN_SHARD_ROWS,
        describe,
        strategy_from_environment,
    )

    min_shard_rows = DEFAULT_MIN_SHARD_ROWS if args.ps_min_shard_rows is None else args.ps_min_shard_rows

    strategy = strategy_from_environment(min_shard_rows)  # before TensorFlow runs any op
    if strategy is not None:
        print(describe(strategy), file=sys.stderr, flush=True)
    metrics = train(args.data, args.model_dir, config, spec, restart=args.restart, strategy=strategy)
    print(json.dumps(metrics, indent=2))
    return 0
