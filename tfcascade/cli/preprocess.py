"""``tfcascade preprocess``: Beam pipeline from RecFlow-layout logs to TFRecords."""

from __future__ import annotations

import json


def add_parser(subparsers):
    p = subparsers.add_parser(
        "preprocess", help="Beam: RecFlow logs -> TFRecords, vocabularies, dead letters, stats",
        description="Unknown options are passed to Beam unchanged (e.g. --runner DataflowRunner "
                    "--project P --region R --temp_location gs://...; --runner DaskRunner "
                    "[--dask_workers N | --dask_client_address tcp://host:8786] runs on Dask, "
                    "with the dask extra).")
    p.add_argument("--input", required=True, help="RecFlow-layout folder (any Beam filesystem)")
    p.add_argument("--output", required=True, help="output folder (absent or empty)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --output")
    p.add_argument("--stages", type=int, default=2, choices=(2, 3))
    p.add_argument("--eval-days", type=int, default=1, help="last N days form the eval split")
    p.add_argument("--eval-negatives", type=int, default=160,
                   help="negatives sampled from other requests per eval request")
    p.add_argument("--rows-per-shard", type=int, default=None,
                   help="a day of R all_stage rows is processed as ceil(R / N) request shards; a "
                        "worker holds about one shard in memory (default 200000)")
    p.set_defaults(pass_through=True, beam_args=[])
    return p


def run(args) -> int:
    import logging

    from tfcascade.beam.preprocess import run_preprocess

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    # Beam's and Dask's INFO lines (fused stages, type-hint notes, cluster start-up) would bury
    # the per-shard progress.
    for noisy in ("apache_beam", "distributed"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    stats = run_preprocess(args.input, args.output, stages=args.stages, eval_days=args.eval_days,
                           beam_args=args.beam_args, num_negatives=args.eval_negatives,
                           overwrite=args.overwrite,
                           **({} if args.rows_per_shard is None else {"rows_per_shard": args.rows_per_shard}))
    print(json.dumps(stats, indent=2))
    return 0
