"""Shared helpers for the benchmarks: machine info, timing and result files."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def machine_info() -> dict:
    """What the numbers were measured on (CPU model, cores, memory, library versions)."""
    info = {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_gib": _memory_gib(),
        # Above ~1 per core, other work shared the cores and timings are inflated.
        "load_average_15min": round(os.getloadavg()[2], 2),
    }
    for name in ("tensorflow", "torch", "numpy", "apache_beam"):
        try:
            module = __import__(name)
            info[name] = getattr(module, "__version__", "?")
        except Exception:  # not installed: say so rather than fail the benchmark
            info[name] = None
    try:
        info["git_commit"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False,
            cwd=Path(__file__).parent,
        ).stdout.strip() or None
    except OSError:
        info["git_commit"] = None
    return info


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def time_call(fn: Callable[[], object], repeats: int = 10, warmup: int = 2,
              max_seconds: float = 30.0) -> dict:
    """Median / p99 / mean / min / max wall time of ``fn()`` in milliseconds (after ``warmup`` calls).

    ``fn`` must block until its result is ready (call ``.numpy()`` on TF outputs).
    Stops early once ``max_seconds`` of timed calls have run (at least 3 are kept).
    """
    for _ in range(warmup):
        fn()
    times: list[float] = []
    start = time.perf_counter()
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
        if len(times) >= 3 and time.perf_counter() - start > max_seconds:
            break
    return {"median_ms": statistics.median(times), "p99_ms": _percentile(times, 99),
            "mean_ms": statistics.fmean(times), "min_ms": min(times), "max_ms": max(times),
            "repeats": len(times)}


def _percentile(values: Sequence[float], q: int) -> float:
    """The q-th percentile with linear interpolation (numpy's default)."""
    if len(values) < 2:
        return float(values[0])
    return float(statistics.quantiles(values, n=100, method="inclusive")[q - 1])


def serving_ms(model, features: dict, catalogue=None) -> float:
    """Median ms of one compiled scoring call of ``model`` on ``features`` (one request).

    ``catalogue = (item_vectors, codes, index)`` times TARQ's serving path instead: the item
    vectors and codes precomputed offline for the catalogue, gathered at ``index`` (``[1, n]``),
    scored against the per-request user cache (``user_cache`` → ``score_codes``).
    """
    import tensorflow as tf

    if catalogue is None:
        serve = tf.function(model)
    else:
        items, codes, index = catalogue

        @tf.function
        def serve(f):
            user, cache = model.user_cache(f)
            return model.score_codes(user, cache, tf.gather(items, index), tf.gather(codes, index))
    return time_call(lambda: serve(features).numpy(), repeats=20, warmup=3, max_seconds=20)["median_ms"]


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub markdown table; floats are printed with 4 significant digits."""

    def fmt(value: object) -> str:
        if value is None:
            return "—"
        if isinstance(value, float):
            return f"{value:.4g}"
        return str(value)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def write_results(name: str, payload: dict, markdown: str, out_dir: Path | None = None) -> tuple[Path, Path]:
    """Writes ``<name>.json`` (payload + machine info) and ``<name>.md`` to bench/results/."""
    out_dir = Path(out_dir or RESULTS_DIR)
    out_dir.mkdir(parents=True, exist_ok=True)
    machine = machine_info()
    json_path = out_dir / f"{name}.json"
    md_path = out_dir / f"{name}.md"
    json_path.write_text(json.dumps({"machine": machine, **payload}, indent=2, default=float) + "\n")
    header = (f"Measured {machine['date']} on {machine['cpu_model']} ({machine['cpu_count']} cores, "
              f"{machine['memory_gib']} GiB; 15-minute load average {machine['load_average_15min']}), "
              f"TensorFlow {machine['tensorflow']}, commit {machine['git_commit']}.\n\n")
    md_path.write_text(header + markdown.rstrip() + "\n")
    return json_path, md_path


def plot_quality_vs_cost(points: dict, n: int, ylabel: str, title: str, path: Path) -> None:
    """Scatter of ``{label: (µs per candidate, quality, quality std or None)}`` on a log cost axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for label, (cost, quality, std) in points.items():
        ax.errorbar(cost, quality, yerr=std, fmt="o", capsize=3)
        ax.annotate(label, (cost, quality), fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel(f"µs per candidate (N={n})")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
