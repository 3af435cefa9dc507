"""``tfcascade train``: train one cascade on preprocessed data."""

from __future__ import annotations

import json
import sys


def add_train_options(p) -> None:
    p.add_argument("--data", required=True, help="preprocessing output folder")
    p.add_argument("--stages", type=int, default=2, choices=(2, 3))
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--temperature", type=float, default=None, help="operator temperature of the loss")
    p.add_argument("--embedding-dim", type=int, default=8)
    p.add_argument("--steps-per-epoch", type=int, default=None)
    p.add_argument("--sampled-negatives", type=int, default=0,
                   help="append this many negatives sampled from the batch's other items to each training list")
    p.add_argument("--negative-draw", default="items", choices=("items", "slots"),
                   help="sampled negatives: distinct items of the batch, or other requests' slots (DFTopK's code)")
    p.add_argument("--stage-models", default=None,
                   help="stage kinds earliest first, e.g. dssm,tarq,din (default dssm,din / dssm,mlp,din)")


def add_parser(subparsers):
    p = subparsers.add_parser("train", help="train a cascade (progress bar, TensorBoard, checkpoints, resume)")
    add_train_options(p)
    p.add_argument("--loss", default="lcron", help="bce icc rankflow fs_ranknet fs_lambdaloss arf arf_v2 lcron dftopk lapsum")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model-dir", required=True)
    p.add_argument("--restart", action="store_true",
                   help="start over even if --model-dir holds an interrupted run's backup (otherwise a rerun "
                        "resumes it, and is refused if its options differ)")
    return p


def train_kwargs(args) -> dict:
    return {"stages": args.stages, "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
            "temperature": args.temperature, "embedding_dim": args.embedding_dim,
            "steps_per_epoch": args.steps_per_epoch, "sampled_negatives": args.sampled_negatives,
            "negative_draw": args.negative_draw,
            "stage_models": [s.strip() for s in args.stage_models.split(",")] if args.stage_models else None}


def run(args) -> int:
    from tfcascade.cli.main import UsageError, require_folder

    require_folder(args.data, "--data", "metadata.json", "tfcascade preprocess")
    from tfcascade.training import train
    from tfcascade.training.distribution import describe, strategy_from_environment
    from tfcascade.training.trainer import validate_options

    kwargs = train_kwargs(args)
    try:
        validate_options(**{k: kwargs[k] for k in ("epochs", "batch_size", "lr", "embedding_dim", "steps_per_epoch")})
    except ValueError as err:
        raise UsageError(f"--{str(err).split(' ', 1)[0].replace('_', '-')}: {err}") from None
    strategy = strategy_from_environment()  # before TensorFlow runs any op
    if strategy is not None:
        print(describe(strategy), file=sys.stderr, flush=True)
    metrics = train(args.data, args.model_dir, loss=args.loss, seed=args.seed, restart=args.restart,
                    strategy=strategy, **kwargs)
    print(json.dumps(metrics, indent=2))
    return 0
