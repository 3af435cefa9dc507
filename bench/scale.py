"""Scaling on a small box: preprocessing runners, one vs two training workers, peak memory, and
wall time against the number of requests (tiny → small → medium).

    .venv/bin/python -m bench.scale --quick                 # tiny + small, the runners and workers on small
    .venv/bin/python -m bench.scale                         # tiny + small + medium (tens of minutes)
    .venv/bin/python -m bench.scale --medium-days 2         # medium's preprocessing on its first 2 days only
    .venv/bin/python -m bench.scale --add-runs "small=DaskRunner, 2 workers" --max-rss-gib 14   # one more row

Every measurement is a ``tfcascade`` command in its own process, as a user runs it:

* ``tfcascade simulate --preset P`` once per preset into ``--work`` (kept: a rerun reuses the
  logs and the recorded time unless ``--resimulate``);
* ``tfcascade preprocess`` with the in-process FnApiRunner (the default), Beam's DirectRunner with
  1 and 2 processes (``--runner DirectRunner --direct_num_workers N --direct_running_mode
  multi_processing``) and ``--runner DaskRunner --dask_workers 2`` on the largest preset; rows/s
  is ``stats.json``'s ``input_rows`` over the command's wall time (Python and Beam start-up
  included), and the runners' ``stats.json`` counts are compared;
* ``tfcascade train --loss bce --epochs 1 --batch-size 1024 --steps-per-epoch N`` alone and as
  two workers under ``TF_CONFIG`` (MultiWorkerMirroredStrategy on 127.0.0.1, the same global
  batch); examples/s is the requests trained (the steps' batches; an epoch's last batch is
  partial) over ``metrics.json``'s ``train_seconds``.

Peak memory is the largest sum of the resident set sizes of a command's process tree (Beam's
SDK workers, Dask's workers, both TensorFlow workers), sampled every 0.2 s with psutil. The
1-minute load average is recorded before each measurement; above ``--load-threshold`` the
benchmark waits up to ``--max-wait`` seconds for it to fall first (the cores are shared).
On 2 cores neither a second Beam process nor a second TensorFlow worker can be expected to help:
the tables show what they cost.

Writes ``scale.md``, ``scale.json`` and ``scale.png`` (``scale_quick.*`` with ``--quick``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

from bench.common import RESULTS_DIR, machine_info, markdown_table, write_results
from tfcascade.training.distribution import free_loopback_ports

DEFAULT_WORK = Path(tempfile.gettempdir()) / "tfcascade-bench-scale"
SAMPLE_SECONDS = 0.2
COUNT_KEYS = ("input_rows", "used_rows", "dead_letter_rows", "requests_written")
# label -> extra options of `tfcascade preprocess`
RUNNERS = {
    "in-process FnApiRunner (default)": [],
    "DirectRunner, 1 process": ["--runner", "DirectRunner", "--direct_num_workers", "1",
                                "--direct_running_mode", "multi_processing"],
    "DirectRunner, 2 processes": ["--runner", "DirectRunner", "--direct_num_workers", "2",
                                  "--direct_running_mode", "multi_processing"],
    "DaskRunner, 2 workers": ["--runner", "DaskRunner", "--dask_workers", "2"],
}
DEFAULT_RUNNER = "in-process FnApiRunner (default)"


class PeakRss:
    """Samples the summed RSS of the process trees under ``roots`` every 0.2 s (in a thread); kills
    them (this benchmark's own processes, by pid) once the sum passes ``limit`` bytes."""

    def __init__(self, limit: float = math.inf, min_available: float = 0.0):
        self.roots: list[psutil.Process] = []
        self.peak = 0
        self.limit = limit
        self.min_available = min_available
        self.exceeded = False
        self.reason = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def watch(self, pid: int) -> None:
        try:
            self.roots.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            pass

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def sample(self) -> int:
        seen, total = set(), 0
        for root in self.roots:
            try:
                tree = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                continue
            for proc in tree:
                if proc.pid in seen:
                    continue
                seen.add(proc.pid)
                try:
                    total += proc.memory_info().rss
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    pass
        return total

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.sample())
            available = psutil.virtual_memory().available
            if not self.exceeded and (self.peak > self.limit or available < self.min_available):
                self.exceeded = True
                self.reason = (f"its RSS passed {self.limit / 2**30:g} GiB" if self.peak > self.limit else
                               f"the box had {available / 2**30:.1f} GiB available")
                for root in self.roots:
                    _kill_pid_tree(root.pid)
            self._stop.wait(SAMPLE_SECONDS)


def wait_for_quiet(threshold: float, max_wait: float) -> dict:
    """Waits (at most ``max_wait`` s) for the 1-minute load average to fall to ``threshold``."""
    before = os.getloadavg()[0]
    start = time.monotonic()
    load = before
    while load > threshold and time.monotonic() - start < max_wait:
        time.sleep(min(5.0, max_wait - (time.monotonic() - start)))
        load = os.getloadavg()[0]
    return {"load_before": round(before, 2), "waited_s": round(time.monotonic() - start, 1),
            "load_at_start": round(load, 2)}


def _tfcascade(*args: str) -> list[str]:
    return [sys.executable, "-m", "tfcascade", *args]


def _env(**extra: str) -> dict:
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **extra}


def _kill_pid_tree(pid: int) -> None:
    """Kills a process this benchmark started, and its children (by pid)."""
    try:
        parent = psutil.Process(pid)
        victims = [*parent.children(recursive=True), parent]
    except psutil.NoSuchProcess:
        return
    for victim in victims:
        try:
            victim.kill()
        except psutil.NoSuchProcess:
            pass


def _kill_tree(proc: subprocess.Popen) -> None:
    _kill_pid_tree(proc.pid)
    proc.wait()


def _last_line(path: Path) -> str:
    lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    errors = [line for line in lines if ": error:" in line]
    line = (errors or lines or ["(no output)"])[-1].replace(" (--debug shows the traceback)", "")
    return line if len(line) <= 400 else line[:399] + "…"


def run_commands(name: str, commands: list[tuple[list[str], dict]], args) -> dict:
    """Runs ``commands`` (argv, env) at once, after waiting for a quiet machine; wall time, peak
    RSS of all their process trees, return codes and, on failure, the error line."""
    log_dir = args.log_dir
    log_dir.mkdir(parents=True, exist_ok=True)
    load = wait_for_quiet(args.load_threshold, args.max_wait)
    print(f"[{time.strftime('%H:%M:%S')}] {name}: load {load['load_before']} → {load['load_at_start']} "
          f"(waited {load['waited_s']:.0f} s)", flush=True)
    procs, logs = [], []
    with PeakRss(args.max_rss_gib * 2**30, args.min_available_gib * 2**30) as peak:
        start = time.perf_counter()
        try:
            for i, (argv, env) in enumerate(commands):
                log = log_dir / f"{name}{'' if len(commands) == 1 else f'.{i}'}.log"
                logs.append(log)
                with open(log, "w") as fh:
                    procs.append(subprocess.Popen(argv, env=env, stdout=fh, stderr=subprocess.STDOUT))
                peak.watch(procs[-1].pid)
            deadline = start + args.timeout
            for proc in procs:
                proc.wait(timeout=max(1.0, deadline - time.perf_counter()))
        except subprocess.TimeoutExpired:
            pass
        finally:
            for proc in procs:
                if proc.poll() is None:
                    _kill_tree(proc)
        wall = time.perf_counter() - start
    codes = [proc.returncode for proc in procs]
    result = {"name": name, "wall_s": round(wall, 2), "peak_rss_mib": round(peak.peak / 2**20, 1),
              "returncodes": codes, "ok": all(c == 0 for c in codes), **load,
              "logs": [str(p) for p in logs]}
    if not result["ok"]:
        timed_out = wall >= args.timeout
        result["error"] = (f"stopped after {wall:.0f} s at {peak.peak / 2**30:.1f} GiB RSS: {peak.reason}"
                           if peak.exceeded
                           else f"timed out after {args.timeout:.0f} s" if timed_out
                           else "; ".join(_last_line(p) for p, c in zip(logs, codes) if c != 0))
    print(f"    {'ok' if result['ok'] else 'FAILED'} in {wall:.1f} s, peak RSS {result['peak_rss_mib']:.0f} MiB"
          + ("" if result["ok"] else f": {result['error']}"), flush=True)
    return result


def simulate(preset: str, args) -> dict:
    """Simulates ``preset`` into WORK/<preset>/logs once; a rerun reuses the logs and the timing."""
    folder = args.work / preset
    record = folder / "simulate_run.json"
    logs = folder / "logs"
    if record.exists() and (logs / "ground_truth" / "simulation.json").exists() and not args.resimulate:
        run = json.loads(record.read_text())
        print(f"{preset}: reusing {logs} (simulated {run['date']})", flush=True)
        return {**run, "reused": True}
    if logs.exists():
        shutil.rmtree(logs)
    folder.mkdir(parents=True, exist_ok=True)
    run = run_commands(f"simulate-{preset}", [(_tfcascade("simulate", "--preset", preset, "--out", str(logs)),
                                                _env())], args)
    if not run["ok"]:
        raise RuntimeError(f"simulate --preset {preset} failed: {run['error']}")
    sim = json.loads((logs / "ground_truth" / "simulation.json").read_text())
    run.update(date=time.strftime("%Y-%m-%d %H:%M:%S"), requests=sim["requests"], stage_samples=sim["stage_samples"],
               simulator_seconds=sim["seconds"], days=len(sim["days"]), requests_per_day=sim["config"]["requests_per_day"])
    record.write_text(json.dumps(run, indent=2) + "\n")
    return {**run, "reused": False}


def day_subset(preset: str, days: int, args) -> Path:
    """WORK/<preset>/logs_<days>d: the first ``days`` days of the preset's logs (symbolic links)."""
    src, dst = args.work / preset / "logs", args.work / preset / f"logs_{days}d"
    if dst.exists():
        shutil.rmtree(dst)
    (dst / "others").mkdir(parents=True)
    for item in (src / "others").iterdir():
        (dst / "others" / item.name).symlink_to(item)
    all_days = sorted(p.stem for p in (src / "all_stage").glob("*.feather"))
    for sub, ext in (("all_stage", "feather"), ("realshow", "feather"), ("request_id_dict", "pkl"),
                     ("seq_effective_50_dict", "pkl")):
        (dst / sub).mkdir()
        for day in all_days[:days]:
            (dst / sub / f"{day}.{ext}").symlink_to(src / sub / f"{day}.{ext}")
    return dst


def preprocess(preset: str, logs: Path, runner: str, args) -> dict:
    out = args.work / preset / f"data-{_slug(runner)}"
    argv = _tfcascade("preprocess", "--input", str(logs), "--output", str(out), "--overwrite", *RUNNERS[runner])
    run = run_commands(f"preprocess-{preset}-{_slug(runner)}", [(argv, _env())], args)
    run.update(preset=preset, runner=runner, input=str(logs), output=str(out))
    for partial in out.parent.glob(f"{out.name}.tmp-*"):  # what a stopped run leaves behind
        shutil.rmtree(partial, ignore_errors=True)
    if run["ok"]:
        stats = json.loads((out / "stats.json").read_text())
        run["stats"] = {key: stats[key] for key in COUNT_KEYS}
        run["rows_per_s"] = stats["input_rows"] / run["wall_s"]
        run["requests"] = sum(stats["requests_written"].values())
    return run



def requests_trained(train_requests: int, steps: int, batch: int) -> int:
    """Requests in the first ``steps`` batches of epochs of ``train_requests`` (last batch partial)."""
    per_epoch = math.ceil(train_requests / batch)
    epochs, rest = divmod(steps, per_epoch)
    return epochs * train_requests + rest * batch


def train(preset: str, data: Path, workers: int, args) -> dict:
    model_dir = args.work / preset / f"model-{workers}w"
    if model_dir.exists():
        shutil.rmtree(model_dir)
    options = ["--data", str(data), "--loss", "bce", "--epochs", "1", "--batch-size", str(args.batch_size),
               "--steps-per-epoch", str(args.train_steps), "--restart"]
    if workers == 1:
        commands = [(_tfcascade("train", *options, "--model-dir", str(model_dir)), _env())]
    else:
        cluster = {"worker": [f"127.0.0.1:{p}" for p in free_loopback_ports(workers)]}
        commands = [(_tfcascade("train", *options, "--model-dir", str(model_dir) + ("" if i == 0 else f"-w{i}")),
                     _env(TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})))
                    for i in range(workers)]
    run = run_commands(f"train-{preset}-{workers}w", commands, args)
    for i in range(1, workers):
        shutil.rmtree(str(model_dir) + f"-w{i}", ignore_errors=True)
    run.update(preset=preset, workers=workers, data=str(data))
    if run["ok"]:
        metrics = json.loads((model_dir / "metrics.json").read_text())
        stats = json.loads((data / "stats.json").read_text())
        trained = requests_trained(stats["requests_written"]["train"], metrics["steps"], args.batch_size)
        vocab = json.loads((data / "metadata.json").read_text()).get("vocab_sizes", {})
        run.update(steps=metrics["steps"], train_seconds=metrics["train_seconds"], video_vocab=vocab.get("video_id"),
                   train_step_ms=metrics.get("train_step_ms"), num_workers=metrics.get("num_workers"),
                   strategy=metrics.get("strategy"), requests_trained=trained,
                   train_requests=stats["requests_written"]["train"],
                   examples_per_s=trained / metrics["train_seconds"],
                   steady_examples_per_s=(min(args.batch_size, stats["requests_written"]["train"])
                                          / (metrics["train_step_ms"] / 1e3) if metrics.get("train_step_ms") else None),
                   joint_recall=metrics.get("joint_recall"))
    return run


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-").replace("--", "-")


def counts_agree(runs: list[dict]) -> tuple[bool | None, str]:
    done = [r for r in runs if r.get("stats")]
    if len(done) < 2:
        return None, "fewer than two runners finished: nothing to compare"
    first = done[0]["stats"]
    differ = [r["runner"] for r in done[1:] if r["stats"] != first]
    failed = [r for r in runs if not r.get("stats")]
    tail = f" ({len(failed)} stopped or failed run{'s' if len(failed) > 1 else ''} not compared)" if failed else ""
    if differ:
        return False, f"stats.json counts DIFFER: {', '.join(differ)} vs {done[0]['runner']}{tail}"
    return True, (f"stats.json counts agree across the {len(done)} runners that finished: input_rows "
                  f"{first['input_rows']:,}, used_rows {first['used_rows']:,}, dead_letter_rows "
                  f"{first['dead_letter_rows']}, requests_written {first['requests_written']}{tail}")


def slope(points: list[tuple[float, float]]) -> float | None:
    """Log-log slope between the last two points (1 = linear)."""
    if len(points) < 2 or points[-1][0] == points[-2][0]:
        return None
    (x0, y0), (x1, y1) = points[-2], points[-1]
    return math.log(y1 / y0) / math.log(x1 / x0)


def plot(scaling: dict, path: Path) -> None:
    """Left: wall seconds of simulate and preprocess against requests (with a slope-1 guide).
    Right: ms per request of all three; training (fixed steps) is placed at its data's size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    for step, marker in (("simulate", "o"), ("preprocess", "s")):
        pts = scaling[step]
        if pts:
            xs = [p["requests"] for p in pts]
            left.plot(xs, [p["wall_s"] for p in pts], marker=marker, label=step)
            right.plot(xs, [p["ms_per_request"] for p in pts], marker=marker, label=step)
    train = [p for p in scaling["train"] if p.get("data_requests")]
    if train:
        right.plot([p["data_requests"] for p in train], [p["ms_per_request"] for p in train], marker="^",
                   label="train, per trained request (fixed steps)")
    all_x = [p["requests"] for step in ("simulate", "preprocess") for p in scaling[step]]
    if all_x and scaling["preprocess"]:
        x0, y0 = scaling["preprocess"][-1]["requests"], scaling["preprocess"][-1]["wall_s"]
        xs = [min(all_x), max(all_x)]
        left.plot(xs, [y0 * x / x0 for x in xs], ":", color="grey", label="slope 1 (linear)")
    for ax in (left, right):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("requests simulated / preprocessed")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    left.set_ylabel("wall seconds of the command")
    left.set_title("wall time vs requests")
    right.set_ylabel("ms per request")
    right.set_title("cost per request (flat = linear)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _fmt_mib(run: dict) -> str:
    return f"{run['peak_rss_mib']:,.0f}"


def _load(run: dict) -> str:
    text = f"{run['load_at_start']:.2f}"
    if run["waited_s"] >= 1:
        text += f" (was {run['load_before']:.2f}, waited {run['waited_s']:.0f} s)"
    return text


def _runner_rows(runs: list[dict], reruns: list[dict] = ()) -> list[list]:
    base = runs[0] if runs and runs[0]["ok"] else None
    rows = []
    for r in [*runs, *reruns]:
        label = r["runner"] + (f" (rerun alone, limit {r['rerun']['max_rss_gib']:g} GiB)" if r.get("rerun") else "")
        if r["ok"]:
            rate = f"{r['rows_per_s']:,.0f}"
            if base and r["stats"] != base["stats"]:
                written = r["stats"]["requests_written"]
                rate += (f" ⚠ counts differ from in-process: {r['stats']['dead_letter_rows']:,} rows dead-lettered, "
                         f"{written['train']:,}/{written['eval']:,} train/eval requests written")
            rows.append([label, f"{r['stats']['input_rows']:,}", f"{r['wall_s']:.1f}", rate,
                         f"{r['rows_per_s'] / base['rows_per_s']:.2f}×" if base else "—", _fmt_mib(r), _load(r)])
        else:
            error = r["error"].replace(" (--debug sho", "…")
            if not error.startswith(("stopped", "timed out")):
                error = ("not available: " if "Dask" in r["runner"] else "failed: ") + error
            rows.append([label, "—", f"{r['wall_s']:.1f}", error, "—", _fmt_mib(r), _load(r)])
    return rows


def _train_rows(trains: list[dict]) -> list[list]:
    one = next((t for t in trains if t["workers"] == 1 and t["ok"]), None)
    rows = []
    for t in trains:
        if t["ok"]:
            rows.append([t["workers"], t["steps"], f"{t['requests_trained']:,}", f"{t['train_seconds']:.1f}",
                         f"{t['examples_per_s']:,.0f}",
                         f"{t['examples_per_s'] / one['examples_per_s']:.2f}×" if one else "—",
                         f"{t['train_step_ms']:.0f}" if t.get("train_step_ms") else "—",
                         f"{t['steady_examples_per_s']:,.0f}" if t.get("steady_examples_per_s") else "—",
                         f"{t['wall_s']:.1f}", _fmt_mib(t), _load(t)])
        else:
            rows.append([t["workers"], "—", "—", "—", f"failed: {t['error']}", "—", "—", "—", f"{t['wall_s']:.1f}",
                         _fmt_mib(t), _load(t)])
    return rows


def render(payload: dict) -> str:
    quick, presets = payload["quick"], payload["presets"]
    sims, pre, trains = payload["simulate"], payload["preprocess"], payload["train"]
    lines = [f"# Scaling: preprocessing runners, training workers, memory, {' → '.join(presets)}"
             + (" (quick)" if quick else ""), ""]
    lines += [f"{payload['cores']} cores shared with other work: the 1-minute load average before each "
              f"measurement is in the tables (above {payload['load_threshold']} the benchmark waited up to "
              f"{payload['max_wait']:.0f} s for it to fall, then measured anyway). Every row is one `tfcascade` "
              "command in its own process; wall time includes starting Python, TensorFlow and Beam. Peak memory: "
              "the largest summed RSS of the command's process tree, children included (Beam SDK workers, Dask "
              "workers, both training workers), sampled every 0.2 s"
              + (f"; a command passing {payload['max_rss_gib']:g} GiB (or leaving under "
                 f"{payload['min_available_gib']:g} GiB available on the box) is stopped" if payload.get("max_rss_gib")
                 else "") + ". One run per row: noisy.", ""]
    notes = [*payload.get("notes", []), *([payload["memory_note"]] if payload.get("memory_note") else [])]
    if notes:
        lines += ["**Caps and caveats**", "", *[f"* {n}" for n in notes], ""]
    lines += ["## Simulated logs", "",
              markdown_table(["preset", "days × requests/day", "requests", "stage samples (rows)", "wall s",
                              "peak RSS MiB", "load (1 min) at start"],
                             [[s["preset"], f"{s['days']} × {s['requests_per_day']:,}", f"{s['requests']:,}",
                               f"{s['stage_samples']:,}", f"{s['wall_s']:.1f}", _fmt_mib(s),
                               _load(s) + (f" (logs reused, simulated {s['date']})" if s.get("reused") else "")]
                              for s in sims]), ""]
    for preset, comparison in payload["comparisons"].items():
        lines += [f"## Preprocessing runners on {preset}", ""]
        if comparison.get("input_note"):
            lines += [comparison["input_note"], ""]
        lines += [markdown_table(["runner", "input rows", "wall s", "rows/s", "vs in-process", "peak RSS MiB",
                                  "load (1 min) at start"],
                                 _runner_rows(comparison["runners"], comparison.get("reruns", []))), "",
                  comparison["counts_note"] + ".", ""]
    lines += ["Options: in-process = no `--runner` (Beam's FnApiRunner in the command's process); "
              "`--runner DirectRunner --direct_num_workers N --direct_running_mode multi_processing`; "
              "`--runner DaskRunner --dask_workers 2` (a LocalCluster of 2 worker processes, 1 thread each). "
              "`--runner DirectRunner` first tries Beam's Prism runner, whose binary it downloads; with no network "
              "that fails at once and Beam falls back to the FnApiRunner with N SDK worker processes (the log says "
              "so), which is what those rows measure.", ""]
    for preset, comparison in payload["comparisons"].items():
        runs = [t for t in trains if t["preset"] == preset]
        if not runs:
            continue
        lines += [f"## Training on {preset}: one worker vs two (MultiWorkerMirroredStrategy)", ""]
        if comparison.get("input_note"):
            lines += ["On the capped preprocessing output above.", ""]
        lines += [markdown_table(["workers", "steps", "requests trained", "train s", "examples/s", "vs 1 worker",
                                  "median step ms", "examples/s at median step", "wall s", "peak RSS MiB",
                                  "load (1 min) at start"], _train_rows(runs)), ""]
    lines += [f"`tfcascade train --loss bce --epochs 1 --batch-size {payload['batch_size']} --steps-per-epoch "
              f"{payload['train_steps']}`: the step count is capped at {payload['train_steps']} so that a run stays "
              "within minutes (the train split repeats if it is shorter). Two workers: two processes on 127.0.0.1 "
              "under `TF_CONFIG`, the same global batch (each worker computes half of it, the gradients are "
              "all-reduced). examples/s = requests trained (the steps' batches; an epoch's last batch is partial) / "
              "`train_seconds` of metrics.json (fit only, the first step's tracing included; start-up, evaluation "
              "and saving are in the wall time); at median step = batch / median step time (steady state).", ""]
    lines += ["## Time against requests", "",
              "Wall seconds of `simulate` and of `preprocess` (in-process runner) per preset; training runs a fixed "
              f"number of steps ({payload['train_steps']}), so its column is the cost per trained request "
              "(`train_seconds` / requests trained, one worker).", ""]
    rows = []
    for s in sims:
        p = next((r for r in pre if r["preset"] == s["preset"]), None)
        p = p if p and p["ok"] else None
        t = next((r for r in trains if r["preset"] == s["preset"] and r["workers"] == 1 and r["ok"]), None)
        rows.append([s["preset"], f"{s['requests']:,}", f"{s['wall_s']:.1f}", f"{s['simulator_seconds']:.1f}",
                     f"{1e3 * s['wall_s'] / s['requests']:.2f}",
                     f"{p['requests']:,}" if p else "—", f"{p['wall_s']:.1f}" if p else "—",
                     f"{1e3 * p['wall_s'] / p['requests']:.2f}" if p else "—", _fmt_mib(p) if p else "—",
                     f"{1e3 / t['examples_per_s']:.3f}" if t else "—", _fmt_mib(t) if t else "—"])
    lines += [markdown_table(["preset", "requests simulated", "simulate s", "simulator's own s", "simulate ms/request",
                              "requests preprocessed", "preprocess s", "preprocess ms/request", "preprocess peak RSS MiB",
                              "train ms/request (1 worker)", "train peak RSS MiB"], rows), ""]
    lines += [payload["scaling_note"], "", f"![wall time and cost per request vs requests]({payload['plot']})", ""]
    return "\n".join(lines)


def scaling_note(scaling: dict) -> tuple[str, dict]:
    """Log-log slopes between the two largest points of each step (1 = linear in requests)."""
    slopes, parts = {}, []
    for step in ("simulate", "preprocess"):
        pts = scaling[step]
        slopes[step] = slope([(p["requests"], p["wall_s"]) for p in pts])
        if slopes[step] is not None:
            s = slopes[step]
            verdict = ("about linear" if 0.8 <= s <= 1.2 else
                       "sub-linear: the fixed start-up cost still counts" if s < 0.8 else "super-linear")
            parts.append(f"{step} {s:.2f} from {pts[-2]['preset']} ({pts[-2]['requests']:,} requests) to "
                         f"{pts[-1]['preset']} ({pts[-1]['requests']:,}): {verdict}")
    text = "Log-log slope of wall time against requests (1 = linear): " + ("; ".join(parts) or "—") + "."
    pts = [p for p in scaling["simulate"] if p.get("own_s")]
    slopes["simulate_own"] = slope([(p["requests"], p["own_s"]) for p in pts])
    if slopes["simulate_own"] is not None:
        text += (f" The simulator's own time (its `seconds`, without starting Python and building the world) has "
                 f"slope {slopes['simulate_own']:.2f}: {pts[-2]['preset']}'s days hold fewer requests, so each "
                 "day's fixed numpy and file-writing work is spread over fewer requests.")
    pts = scaling["train"]
    slopes["train_ms_per_request"] = slope([(p["requests"], p["ms_per_request"]) for p in pts])
    if len(pts) >= 2:
        vocab = (f" (video_id vocabulary {pts[-2]['video_vocab']:,} → {pts[-1]['video_vocab']:,})"
                 if pts[-1].get("video_vocab") and pts[-2].get("video_vocab") else "")
        text += (f" Training's cost per request changes by {pts[-1]['ms_per_request'] / pts[-2]['ms_per_request']:.2f}× "
                 f"from {pts[-2]['preset']} to {pts[-1]['preset']} (fixed steps and batch: the data's size enters only "
                 f"through the vocabularies, i.e. the embedding tables{vocab}, and how many batches are partial; "
                 "the loads differed too).")
    return text, slopes


def memory_note(payload: dict) -> str | None:
    """How in-process preprocessing's peak RSS grew from small to medium against its input rows
    (and, where medium was capped, what that growth would reach on all of medium)."""
    sims = {s["preset"]: s for s in payload["simulate"]}
    pre = [r for r in payload["preprocess"] if r["ok"] and r["preset"] in ("small", "medium")]
    if len(pre) < 2 or "medium" not in sims:
        return None
    (a, b), full = pre[-2:], sims["medium"]["stage_samples"]
    x0, x1, y0, y1 = a["stats"]["input_rows"], b["stats"]["input_rows"], a["peak_rss_mib"], b["peak_rss_mib"]
    text = (f"In-process preprocessing's peak RSS went from {y0:,.0f} MiB ({a['preset']}, {x0:,} rows) to "
            f"{y1:,.0f} MiB ({b['preset']}, {x1:,} rows): {y1 / y0:.2f}× the memory for {x1 / x0:.1f}× the rows. "
            "The pipeline works in request shards of at most `--rows-per-shard` rows (default 200,000): a "
            "worker holds about one shard, one record batch of its day's all_stage file and that day's two "
            "pickles (whose size grows with the requests per day, not with the number of days), plus the "
            "vocabularies, a side input of the indexing step.")
    if payload.get("medium_days"):
        at_full = y1 + (y1 - y0) / (x1 - x0) * (full - x1)
        text += (f" Medium was capped at its first {payload['medium_days']} days; at that growth all of medium "
                 f"({full:,} rows) would need about {at_full / 1024:.1f} GiB.")
    return text


def add_runs(args) -> int:
    """Measures the ``--add-runs`` preprocessing runs alone and adds them to the existing results
    (rows marked as reruns, with the memory limit they ran under); the header keeps the date of
    the original run and a note says when the reruns were measured."""
    name = "scale_quick" if args.quick else "scale"
    out_dir = Path(args.out_dir)
    stored = json.loads((out_dir / f"{name}.json").read_text())
    machine = stored.pop("machine")
    payload = stored
    for spec in args.add_runs or []:
        preset, _, runner = spec.partition("=")
        if preset not in payload["comparisons"] or runner not in RUNNERS:
            raise SystemExit(f"--add-runs {spec!r}: need PRESET=RUNNER with PRESET one of "
                             f"{sorted(payload['comparisons'])} and RUNNER one of {list(RUNNERS)}")
        comparison = payload["comparisons"][preset]
        logs = args.work / preset / "logs"
        if preset == "medium" and payload.get("medium_days"):
            logs = day_subset(preset, payload["medium_days"], args)
        run = preprocess(preset, logs, runner, args)
        run["rerun"] = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "max_rss_gib": args.max_rss_gib,
                        "min_available_gib": args.min_available_gib}
        comparison.setdefault("reruns", []).append(run)
        comparison["counts_agree"], comparison["counts_note"] = counts_agree(
            [*comparison["runners"], *comparison["reruns"]])
        payload["notes"].append(f"{runner} on {preset} was measured again on its own at {run['rerun']['date']} "
                                f"with a {args.max_rss_gib:g} GiB limit (`--add-runs`), after the first run was "
                                "stopped or failed; its row says \"rerun alone\".")
        print(comparison["counts_note"], flush=True)
    payload["notes"] += list(args.note)
    for comparison in payload["comparisons"].values():
        comparison["counts_agree"], comparison["counts_note"] = counts_agree(
            [*comparison["runners"], *comparison.get("reruns", [])])
    sims = {s["preset"]: s for s in payload["simulate"]}
    for point in payload["scaling"]["simulate"]:
        point.setdefault("own_s", sims[point["preset"]]["simulator_seconds"])
    for point, run in zip(payload["scaling"]["train"], [t for t in payload["train"] if t["ok"] and t["workers"] == 1]):
        meta = Path(run["data"]) / "metadata.json"
        if point.get("video_vocab") is None and meta.exists():
            point["video_vocab"] = run["video_vocab"] = json.loads(meta.read_text())["vocab_sizes"]["video_id"]
        point.setdefault("data_requests", next((r["requests"] for r in payload["preprocess"]
                                                if r["preset"] == point["preset"] and r["ok"]), None))
    payload["scaling_note"], payload["slopes"] = scaling_note(payload["scaling"])
    payload["memory_note"] = memory_note(payload)
    plot(payload["scaling"], out_dir / f"{name}.png")
    md = render(payload)
    (out_dir / f"{name}.json").write_text(json.dumps({"machine": machine, **payload}, indent=2, default=float) + "\n")
    header = (f"Measured {machine['date']} on {machine['cpu_model']} ({machine['cpu_count']} cores, "
              f"{machine['memory_gib']} GiB), TensorFlow {machine['tensorflow']}, commit {machine['git_commit']}.\n\n")
    (out_dir / f"{name}.md").write_text(header + md.rstrip() + "\n")
    print(md)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny + small only (smoke run); the comparisons on small")
    parser.add_argument("--presets", nargs="+", choices=("tiny", "small", "medium"), default=None,
                        help="presets, smallest first (default: tiny small medium; tiny small with --quick)")
    parser.add_argument("--compare-on", nargs="+", choices=("tiny", "small", "medium"), default=None,
                        help="presets on which every runner and two training workers run (default: small and "
                             "medium; small with --quick); the others get the in-process runner and one worker")
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK,
                        help=f"folder for the logs, outputs and command logs (default {DEFAULT_WORK}); simulated "
                             "logs found there are reused")
    parser.add_argument("--resimulate", action="store_true", help="simulate again even if the logs exist")
    parser.add_argument("--medium-days", type=int, default=None,
                        help="preprocess (and train on) only the first N days of medium (a cap; N >= 2)")
    parser.add_argument("--train-steps", type=int, default=100, help="training steps per run (default 100)")
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--runners", nargs="+", default=list(RUNNERS), choices=list(RUNNERS), metavar="RUNNER",
                        help="preprocessing runners compared")
    parser.add_argument("--load-threshold", type=float, default=1.0)
    parser.add_argument("--max-wait", type=float, default=120.0, help="seconds to wait for the load to fall")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds one command may run")
    parser.add_argument("--max-rss-gib", type=float, default=10.0,
                        help="stop a command whose process tree's RSS passes this (the box is shared; default 10)")
    parser.add_argument("--min-available-gib", type=float, default=1.5,
                        help="stop a command when the box has less memory available than this (default 1.5)")
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--add-runs", nargs="+", metavar="PRESET=RUNNER", default=None,
                        help="measure only these preprocessing runs and add them to the existing results (e.g. one "
                             "stopped by the memory limit, rerun with a higher --max-rss-gib)")
    parser.add_argument("--rerender", action="store_true",
                        help="measure nothing: write the markdown again from the results' JSON (with --note: add notes)")
    parser.add_argument("--note", action="append", default=[], help="a note to add to the results (repeatable)")
    args = parser.parse_args(argv)
    if args.medium_days is not None and args.medium_days < 2:
        parser.error("--medium-days must be >= 2 (one train day and one eval day)")
    args.work = args.work.resolve()
    args.work.mkdir(parents=True, exist_ok=True)
    args.log_dir = args.work / "logs" / time.strftime("%Y%m%d-%H%M%S")  # every command's output, kept
    if args.add_runs or args.rerender:
        return add_runs(args)
    presets = args.presets or (["tiny", "small"] if args.quick else ["tiny", "small", "medium"])
    compare_on = args.compare_on or ([presets[-1]] if args.quick or len(presets) < 3 else ["small", "medium"])
    compare_on = [p for p in presets if p in compare_on]
    runners = [DEFAULT_RUNNER] + [r for r in args.runners if r != DEFAULT_RUNNER]
    started = time.time()
    print(json.dumps(machine_info()), flush=True)

    sims = [{"preset": p, **simulate(p, args)} for p in presets]
    pre, trains, notes, comparisons = [], [], [], {}
    for sim in sims:
        preset, logs, input_note = sim["preset"], args.work / sim["preset"] / "logs", None
        if preset == "medium" and args.medium_days and args.medium_days < sim["days"]:
            logs = day_subset(preset, args.medium_days, args)
            input_note = (f"Capped: preprocessing (and training) on {preset} read only its first {args.medium_days} "
                          f"of {sim['days']} simulated days ({args.medium_days * sim['requests_per_day']:,} of "
                          f"{sim['requests']:,} requests; the last of those days is the eval split).")
            notes.append(input_note)
        chosen = runners if preset in compare_on else [DEFAULT_RUNNER]
        runs = [preprocess(preset, logs, r, args) for r in chosen]
        pre.append(runs[0])
        if preset in compare_on:
            agree, counts_note = counts_agree(runs)
            print(counts_note, flush=True)
            comparisons[preset] = {"runners": runs, "counts_agree": agree, "counts_note": counts_note,
                                   "input_note": input_note}
        data = next((Path(r["output"]) for r in runs if r["ok"]), None)
        if data is None:
            continue
        for workers in (1, 2) if preset in compare_on else (1,):
            trains.append(train(preset, data, workers, args))

    scaling = {"simulate": [{"preset": s["preset"], "requests": s["requests"], "wall_s": s["wall_s"],
                             "own_s": s["simulator_seconds"], "ms_per_request": 1e3 * s["wall_s"] / s["requests"]}
                            for s in sims],
               "preprocess": [{"preset": r["preset"], "requests": r["requests"], "wall_s": r["wall_s"],
                               "ms_per_request": 1e3 * r["wall_s"] / r["requests"]} for r in pre if r["ok"]],
               "train": [{"preset": t["preset"], "requests": t["requests_trained"], "wall_s": t["train_seconds"],
                          "ms_per_request": 1e3 / t["examples_per_s"], "video_vocab": t.get("video_vocab"),
                          "data_requests": next((r["requests"] for r in pre if r["preset"] == t["preset"] and r["ok"]),
                                                None)}
                         for t in trains if t["ok"] and t["workers"] == 1]}
    name = "scale_quick" if args.quick else "scale"
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    payload = {"quick": args.quick, "presets": presets, "compare_on": compare_on, "cores": os.cpu_count(),
               "load_threshold": args.load_threshold, "max_wait": args.max_wait, "max_rss_gib": args.max_rss_gib,
               "min_available_gib": args.min_available_gib, "train_steps": args.train_steps,
               "batch_size": args.batch_size, "medium_days": args.medium_days, "simulate": sims, "preprocess": pre,
               "comparisons": comparisons, "train": trains, "scaling": scaling, "notes": notes + list(args.note),
               "plot": f"{name}.png", "benchmark_seconds": round(time.time() - started, 1)}
    payload["scaling_note"], payload["slopes"] = scaling_note(scaling)
    payload["memory_note"] = memory_note(payload)
    plot(scaling, out_dir / f"{name}.png")
    md = render(payload)
    write_results(name, payload, md, out_dir)
    print(md)
    print(f"wrote {out_dir / name}.md / .json / .png in {payload['benchmark_seconds']:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
