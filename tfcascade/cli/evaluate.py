"""``tfcascade evaluate``: metrics of a trained cascade on the eval split."""

from __future__ import annotations

import json


def add_parser(subparsers):
    p = subparsers.add_parser("evaluate", help="Joint Recall@K@q and per-stage metrics on the eval split")
    p.add_argument("--model-dir", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--batch-size", type=int, default=256)
    return p


def run(args) -> int:
    from tfcascade.cli.main import require_folder

    require_folder(args.data, "--data", "metadata.json", "tfcascade preprocess")
    require_folder(args.model_dir, "--model-dir", "config.json", "tfcascade train")
    from tfcascade.training import evaluate

    print(json.dumps(evaluate(args.model_dir, args.data, args.batch_size), indent=2))
    return 0
