"""``tfcascade simulate``: RecFlow-shaped cascade logs from a hidden ground truth."""

from __future__ import annotations

import json


def add_parser(subparsers):
    p = subparsers.add_parser("simulate", help="simulate cascade logs in the RecFlow layout")
    p.add_argument("--out", required=True, help="folder to write (RecFlow layout)")
    p.add_argument("--preset", default="tiny", choices=("tiny", "small", "medium"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--users", type=int)
    p.add_argument("--items", type=int)
    p.add_argument("--days", type=int)
    p.add_argument("--requests-per-day", type=int)
    p.add_argument("--stage-sizes", type=int, nargs=6, metavar="N",
                   help="items kept by retrieval, pre-ranking, coarse, ranking, re-ranking, shown")
    p.add_argument("--samples-per-stage", type=int, help="negatives logged per stage and request")
    p.add_argument("--noise", type=float, nargs=5, metavar="SIGMA",
                   help="score noise of retrieval, pre-ranking, coarse, ranking, re-ranking")
    return p


def run(args) -> int:
    import logging

    from tfcascade.data.simulator import simulate

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    stats = simulate(args.out, preset=args.preset, seed=args.seed, users=args.users, items=args.items,
                     days=args.days, requests_per_day=args.requests_per_day,
                     stage_sizes=args.stage_sizes, samples_per_stage=args.samples_per_stage,
                     noise=args.noise)
    stats.pop("config")
    print(json.dumps(stats, indent=2))
    return 0
