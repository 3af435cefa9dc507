"""Beam preprocessing throughput (in-process FnApiRunner, the DirectRunner's batch engine): input rows and requests per second.

    .venv/bin/python -m bench.preprocess --quick     # simulate + preprocess the tiny preset
    .venv/bin/python -m bench.preprocess --preset small

The simulated logs are written first (not timed); the timing covers ``run_preprocess`` end to
end (read, validate, vocabularies, organise, sample eval negatives, write TFRecords). Measured
on 2 cores with other work on the machine: noisy. DirectRunner is a correctness runner; scale-out
runners (Dataflow/Flink/Spark) are where throughput is meant to come from.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from bench.common import markdown_table, write_results
from tfcascade.beam.preprocess import run_preprocess
from tfcascade.data.simulator import simulate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny preset")
    parser.add_argument("--preset", default="small")
    parser.add_argument("--stages", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--days", type=int, default=None, help="override the preset's days")
    parser.add_argument("--requests-per-day", type=int, default=None, help="override the preset's value")
    args = parser.parse_args(argv)
    preset = "tiny" if args.quick else args.preset
    with tempfile.TemporaryDirectory() as tmp:
        logs, out = Path(tmp) / "logs", Path(tmp) / "out"
        knobs = {k: v for k, v in (("days", args.days), ("requests_per_day", args.requests_per_day))
                 if v is not None}
        sim = simulate(logs, preset=preset, seed=args.seed, **knobs)
        start = time.perf_counter()
        stats = run_preprocess(str(logs), str(out), stages=args.stages,
                               beam_args=["--direct_num_workers=1"])
        wall = time.perf_counter() - start
    requests = sum(stats["requests_written"].values())
    payload = {"preset": preset, "knobs": knobs, "stages": args.stages, "simulated_stage_samples": sim["stage_samples"],
               "seconds": wall, "stats": stats, "rows_per_second": stats["input_rows"] / wall,
               "requests_per_second": requests / wall}
    md = ("# Beam preprocessing throughput (FnApiRunner, 1 worker)\n\n2 shared cores; noisy.\n\n"
          + markdown_table(["preset", "input rows", "dead letter", "requests (train/eval)", "seconds",
                            "rows/s", "requests/s"],
                           [[f"{preset} {knobs or ''}", stats["input_rows"], stats["dead_letter_rows"],
                             f"{stats['requests_written']['train']}/{stats['requests_written']['eval']}",
                             f"{wall:.1f}", f"{stats['input_rows'] / wall:,.0f}",
                             f"{requests / wall:,.1f}"]]) + "\n")
    write_results("preprocess", payload, md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
