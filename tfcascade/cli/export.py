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
    p.add_argument("--k", type=int, default=None,
                   help="items returned per request (1 ≤ k ≤ the last stage's q; default: the model's k)")
    p.add_argument("--items", default=None,
                   help="CSV of the corpus `recommend` serves (header: video_id, author_id, category_level_one, "
                        "category_level_two, upload_type and upload_timestamp (s) or upload_weekday, upload_hour, "
                        "upload_minute; raw ids); default: the training examples' items")
    p.add_argument("--no-recommend", action="store_true", help="export without the `recommend` signature")
    p.add_argument("--chunk-size", type=int, default=None,
                   help="corpus items `recommend` scores at a time (default: ops.brute_force_topk.CHUNK_SIZE)")
    return p


def run(args) -> int:
    import tempfile

    from tfcascade.cli.main import UsageError, require_folder

    require_folder(args.data, "--data", "metadata.json", "tfcascade preprocess")
    require_folder(args.model_dir, "--model-dir", "config.json", "tfcascade train")
    from tfcascade.serving.export import publish_version, write_saved_model
    from tfcascade.training import load_model, require_data

    model = load_model(args.model_dir)
    require_data(model, args.data, "export")
    try:
        model.validate_cut(k=args.k)
    except ValueError as err:
        raise UsageError(f"--k {args.k}: {err}") from None
    if args.chunk_size is not None and args.chunk_size <= 0:
        raise UsageError(f"--chunk-size must be > 0, got {args.chunk_size}")
    with tempfile.TemporaryDirectory() as tmp:
        export = write_saved_model(model, os.path.join(tmp, "saved_model"), os.path.join(args.data, "vocab"),
                                   k=args.k, items=args.items, recommend=False if args.no_recommend else None,
                                   **({"chunk_size": args.chunk_size} if args.chunk_size else {}))
        path = publish_version(export, args.serving_dir, args.model_name, args.version)
    print(f"exported {path}")
    return 0
