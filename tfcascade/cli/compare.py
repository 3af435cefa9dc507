"""``tfcascade compare``: every loss × seeds → mean ± std table, JSON and plot."""

from __future__ import annotations

from tfcascade.cli.train import add_train_options, config_from_args, spec_from_args


def add_parser(subparsers):
    p = subparsers.add_parser("compare", help="train every loss with several seeds and tabulate")
    add_train_options(p)
    p.add_argument("--losses", default="all", help="'all' or a comma-separated list")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--out", required=True, help="writes compare.json, compare.md, compare.png, runs/")
    p.add_argument("--no-resume", dest="resume", action="store_false",
                   help="train every run again even where runs/<loss>/seed<i>/metrics.json exists")
    return p


def run(args) -> int:
    import logging

    from tfcascade.training import compare

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    losses = "all" if args.losses == "all" else [s.strip() for s in args.losses.split(",") if s.strip()]
    compare(args.data, args.out, losses=losses, seeds=args.seeds, config=config_from_args(args),
            spec=spec_from_args(args), resume=args.resume, verbose=0)
    with open(f"{args.out}/compare.md") as fh:
        print(fh.read())
    return 0
