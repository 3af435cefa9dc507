"""``tfcascade export``: a trained cascade → versioned serving SavedModel."""

from __future__ import annotations

import os


def add_parser(subparsers):
    p = subparsers.add_parser("export", help="export a trained cascade for TF Serving (atomic, versioned)")
    p.add_argument("--model-dir", required=True, help="from `tfcascade train`")
    p.add_argument("--data", required=True, help="preprocessing output (vocabularies, warmup examples)")
    p.add_argument("--serving-dir", required=True, help="TF Serving model base folder")
    p.add_argument("--model-name", default="cascade")
    p.add_argument("--version", type=int, default=None, help="default: next integer")
    p.add_argument("--k", type=int, default=10, help="items returned per request")
    return p


def run(args) -> int:
    import tempfile

    from serving.export import publish_version, write_saved_model
    from tfcascade.training import load_model, require_data

    model = load_model(args.model_dir)
    require_data(model, args.data, "export")
    with tempfile.TemporaryDirectory() as tmp:
        export = write_saved_model(model, os.path.join(tmp, "saved_model"), os.path.join(args.data, "vocab"), k=args.k)
        path = publish_version(export, args.serving_dir, args.model_name, args.version)
    print(f"exported {path}")
    return 0
