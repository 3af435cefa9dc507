"""Simulator throughput: stage samples written per minute (goal: ≥ 1 million on one core).

    .venv/bin/python -m bench.simulator --quick      # tiny preset, seconds
    .venv/bin/python -m bench.simulator              # tiny + small presets

Timing covers the whole simulation including writing the feather/pickle files. The machine's
2 cores are shared by several engineers while this runs, so the numbers are noisy (lower bound).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from bench.common import markdown_table, write_results
from tfcascade.data.simulator import simulate

GOAL_PER_MINUTE = 1_000_000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny preset only")
    parser.add_argument("--presets", nargs="+", default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # "one core"
    presets = args.presets or (["tiny"] if args.quick else ["tiny", "small"])
    rows, runs = [], []
    for preset in presets:
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            stats = simulate(tmp, preset=preset, seed=args.seed)
            wall = time.perf_counter() - start
        per_min = stats["stage_samples"] / wall * 60
        runs.append({"preset": preset, "requests": stats["requests"], "stage_samples": stats["stage_samples"],
                     "realshow_rows": stats["realshow_rows"], "seconds": wall,
                     "stage_samples_per_minute": per_min, "meets_goal": per_min >= GOAL_PER_MINUTE})
        rows.append([preset, stats["requests"], stats["stage_samples"], f"{wall:.2f}",
                     f"{per_min / 1e6:.2f} M", "yes" if per_min >= GOAL_PER_MINUTE else "no"])
        print(rows[-1], flush=True)
    md = ("# Simulator throughput\n\nWhole simulation incl. writing files, one process "
          "(2 shared cores; noisy).\n\n"
          + markdown_table(["preset", "requests", "stage samples", "seconds", "samples/minute",
                            "≥ 1 M/min"], rows) + "\n")
    write_results("simulator", {"runs": runs, "goal_per_minute": GOAL_PER_MINUTE}, md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
