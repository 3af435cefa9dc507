"""Parity benchmark: tfcascade's cascade losses next to the official LCRON (and DFTopK) code.

    python -m bench.parity --reference PATH [--dftopk-reference PATH] [--torch-python PY]
        [--preset small] [--data-seeds 11 12] [--train-seeds 3] [--batch-size 64] [--lr 1e-2]
        [--epochs 1] [--losses bce,icc,rankflow,fs_ranknet,fs_lambdaloss,arf,arf_v2,lcron]
        [--stages 2] [--work DIR] [--out bench/results] [--quick]

``PATH`` is a local clone of https://github.com/kwai/LCRON and ``--dftopk-reference`` one of
https://github.com/zhangzhen97/DFTOPK (PyTorch; neither is part of this project). They run as
external programs under ``--torch-python`` (default: a venv in ``~/.cache/tfcascade-parity``
with ``torch==2.13.0 numpy pandas pyarrow scikit-learn``), on the same simulated data:

1. ``tfcascade simulate`` writes the RecFlow layout (``all_stage/``, ``request_id_dict/``,
   ``seq_effective_50_dict/``, ``others/id_cnt.pkl``; one file per day) for every data seed.
   Every day but the last is trained on, the last is the test day (small preset: 7 + 1).
2. LCRON: the reference is copied into the work folder and only its day lists are edited there:
   ``deep_components/file_1st.txt`` (the training days, listed ``--epochs`` times: the
   reference makes one pass over the listed days) and ``eval_day_list`` in
   ``deep_components/run_test2.py`` / ``run_test3.py``; ``data`` is a symlink to the simulated
   folder. Each run is ``PYTHONPATH=. bash two_stage/run_x2.sh all <loss> 0 <tau> <tag> .
   <lr> <BS>`` (``three_stage/run_x3.sh`` for three stages); its ``logs/TEST_*.log`` gives the
   metrics and ``logs/TRAIN_*.log`` the training time. The reference does not seed torch: each
   training seed is set through a ``sitecustomize`` on ``PYTHONPATH`` that calls
   ``torch.manual_seed`` / ``numpy.random.seed`` / ``random.seed`` before the script starts
   (its test script seeds numpy with 1024 itself). Without CUDA the same file replaces
   ``torch.cuda.memory_summary``, which the LCRON code prints at its second step of bce and
   fs_ranknet and which raises a KeyError on a CPU-only torch. ``<tag>`` = 30 + seed, the reference's own
   numbering of repeated runs (its ``<epochs>`` argument only names a run).
3. DFTopK (two stages, loss ``dftopk``): the same edits in the copy's ``torch/`` folder, and its
   two scripts are called with the arguments of ``two_stage/run_x2_negativesampling.sh`` (that
   script hard-codes a python path). Its training seeds itself (42), so it runs once per data
   seed.
4. tfcascade: ``tfcascade preprocess`` (``--stages``) and ``tfcascade train`` with the same
   batch size, learning rate, embedding size 8, temperature (read from the reference: LCRON
   τ = 50, ARF τ = 200; DFTopK τ = 500, its README's command; none for losses without one) and
   number of optimizer steps (``--steps-per-epoch`` = the reference's count). Seconds per epoch
   come from the model dir's ``metrics.json``.

Metrics (k = 10, two stages: retrieval keeps 30, ranking keeps 20 of those; three stages:
40 → 30 → 20): Joint Recall@10@q_T on the test day's logged items (40 a request for two stages,
50 for three), ground truth = the 10 items with the highest graded labels (``30 − rank_index``
for rank_pos, 7 / 6 / 5 for rank_neg / coarse_neg / prerank_neg), plus each stage's
Recall@10@q alone. The DFTopK code reports the same joint recall on the logged items plus 160
negatives sampled from the other requests' slots of each test batch; tfcascade's counterpart
draws them the same way (``bench.cascade.slot_negatives_joint``). Writes ``parity.md``, ``parity.json`` and
``parity_<stages>stage.png`` (``parity_quick*`` with ``--quick``: tiny preset, one data seed,
one training seed, losses bce and lcron).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from bench.common import RESULTS_DIR, markdown_table, write_results

LCRON_URL = "https://github.com/kwai/LCRON"
DFTOPK_URL = "https://github.com/zhangzhen97/DFTOPK"
TORCH_PACKAGES = ("torch==2.13.0", "numpy", "pandas", "pyarrow", "scikit-learn")
TORCH_VENV = Path.home() / ".cache" / "tfcascade-parity" / "torch-venv"
LCRON_LOSSES = ("bce", "icc", "rankflow", "fs_ranknet", "fs_lambdaloss", "arf", "arf_v2", "lcron")
# tfcascade loss -> (the DFTopK code's loss_type, its tau): the README's DFTopK command line.
DFTOPK_LOSSES = {"dftopk": ("cascade-topk_dftopkjoint", 500.0)}
# Reference source files whose ``tau = <value>`` is the operator temperature of a loss.
TEMPERATURE_FILES = {"lcron": "lcron.py", "arf": "arf.py", "arf_v2": "arf.py"}
# The columns that identify one reference example (one request) in a day file.
REQUEST_COLUMNS = ["request_id", "user_id", "request_timestamp", "device_id", "age", "gender", "province"]
SEED_TAG = 30
SEED_ENV = "TFCASCADE_PARITY_TORCH_SEED"
EMBEDDING_DIM = 8
TOLERANCE_FLOOR = 0.01  # the parity goal: within max(0.01, 2 std) of the official code
ADAM_EPSILON = 1e-8  # torch.optim.Adam's default, which the reference code trains with
K = 10
QS = {2: (30, 20), 3: (40, 30, 20)}
# Per depth, earliest stage first: (our name, the reference's stage name in its TEST log, q).
STAGES = {2: (("retrieval", "retrival", 30), ("ranking", "prerank", 20)),
          3: (("retrieval", "retrival", 40), ("prerank", "prerank", 30), ("ranking", "rank", 20))}
LIST_SIZE = {2: 40, 3: 50}
LOGGED_KEYS = {"joint", "requests", "full_lists", "gt_tie_free"}

SITECUSTOMIZE = f'''"""Seeds torch, numpy and random from ${SEED_ENV} before a reference script starts.

On a machine without CUDA it also makes torch.cuda.memory_summary() return a note: the LCRON
code prints it at its second training step (bce, fs_ranknet), where it raises a KeyError on CPU.
"""
import os

import torch

if not torch.cuda.is_available():
    torch.cuda.memory_summary = lambda *args, **kwargs: "(no CUDA device)"

if os.environ.get("{SEED_ENV}"):
    import random

    import numpy

    _seed = int(os.environ["{SEED_ENV}"])
    random.seed(_seed)
    numpy.random.seed(_seed)
    torch.manual_seed(_seed)
'''


# --------------------------------------------------------------------------------------------
# Helpers


def run_logged(cmd: Sequence[str], log: Path, cwd: Path | None = None, env: dict | None = None) -> float:
    """Runs ``cmd`` with stdout and stderr into ``log``; returns the wall seconds.

    Raises:
      RuntimeError: a non-zero exit (the message ends with the log's tail).
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(log, "w") as fh:
        rc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, stdout=fh, stderr=subprocess.STDOUT,
                            check=False).returncode
    seconds = time.perf_counter() - start
    if rc != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} exited with {rc}; {log} ends with:\n{tail(log)}")
    return seconds


def tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def quiet_env() -> dict:
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}


def tfcascade_cli(*args: object) -> list[str]:
    return [sys.executable, "-m", "tfcascade", *map(str, args)]


def git_commit(path: Path) -> str | None:
    out = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True,
                         check=False)
    return (out.stdout.strip() or None) if out.returncode == 0 else None


def mean_std(values: Sequence[float]) -> dict:
    values = [float(v) for v in values if v is not None]
    return {"mean": statistics.fmean(values) if values else None,
            "std": statistics.stdev(values) if len(values) > 1 else 0.0, "runs": values}


def percent(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.0f}%"


def fmt(stat: dict | None, digits: int = 4) -> str:
    if not stat or stat.get("mean") is None:
        return "—"
    return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"


# --------------------------------------------------------------------------------------------
# The torch interpreter for the reference code


def torch_python(given: str | None) -> Path:
    """``given`` after checking it imports the reference's packages, else the cached venv
    (created with ``TORCH_PACKAGES`` on first use)."""
    if given:
        python = Path(given)
    else:
        python = TORCH_VENV / "bin" / "python"
        if not python.exists():
            print(f"creating {TORCH_VENV} with {' '.join(TORCH_PACKAGES)}", flush=True)
            TORCH_VENV.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run([sys.executable, "-m", "venv", str(TORCH_VENV)], check=True)
            subprocess.run([str(python), "-m", "pip", "install", "--quiet", *TORCH_PACKAGES], check=True)
    probe = subprocess.run([str(python), "-c", "import torch, pandas, pyarrow, sklearn; print(torch.__version__)"],
                           capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        raise SystemExit(f"{python} cannot import torch, pandas, pyarrow and scikit-learn:\n{probe.stderr[-2000:]}")
    return python


def seed_tools(python: Path, work: Path) -> tuple[Path, Path]:
    """``(bin, site)``: a folder whose ``python`` runs ``python`` (the reference's shell scripts
    call ``python``) and one holding the seeding ``sitecustomize.py``."""
    bin_dir, site_dir = work / "torch_bin", work / "torch_site"
    bin_dir.mkdir(parents=True, exist_ok=True)
    site_dir.mkdir(parents=True, exist_ok=True)
    shim = bin_dir / "python"
    shim.write_text(f'#!/bin/sh\nexec "{python}" "$@"\n')
    shim.chmod(0o755)
    (site_dir / "sitecustomize.py").write_text(SITECUSTOMIZE)
    return bin_dir, site_dir


def reference_env(bin_dir: Path, site_dir: Path, seed: int) -> dict:
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYTHONPATH": f".{os.pathsep}{site_dir}", SEED_ENV: str(seed), "PYTHONUNBUFFERED": "1"}


# --------------------------------------------------------------------------------------------
# Data


def simulate(preset: str, seed: int, work: Path) -> Path:
    raw = work / "data" / f"{preset}_seed{seed}" / "recflow"
    if not (raw / "others" / "id_cnt.pkl").exists():
        shutil.rmtree(raw, ignore_errors=True)
        print(f"simulate {preset} seed {seed}", flush=True)
        run_logged(tfcascade_cli("simulate", "--out", raw, "--preset", preset, "--seed", seed),
                   raw.parent / "simulate.log", env=quiet_env())
    return raw


def day_names(raw: Path) -> list[str]:
    days = sorted(p.stem for p in (raw / "all_stage").glob("*.feather"))
    if len(days) < 2:
        raise SystemExit(f"{raw} has {len(days)} day files: need at least one training day and a test day")
    return days


def preprocess(raw: Path, stages: int, train_days: list[str], test_day: str) -> Path:
    out = raw.parent / f"tfcascade_{stages}stage"
    if not (out / "metadata.json").exists():
        shutil.rmtree(out, ignore_errors=True)
        print(f"preprocess {raw.parent.name} for {stages} stages", flush=True)
        run_logged(tfcascade_cli("preprocess", "--input", raw, "--output", out, "--stages", stages,
                                 "--eval-days", 1), raw.parent / f"preprocess_{stages}stage.log", env=quiet_env())
    meta = json.loads((out / "metadata.json").read_text())
    if meta.get("train_days") != train_days or meta.get("eval_days") != [test_day]:
        raise SystemExit(f"{out}: train days {meta.get('train_days')} / eval days {meta.get('eval_days')} "
                         f"differ from the reference's {train_days} / {[test_day]}")
    return out


def requests_per_day(raw: Path, days: Sequence[str]) -> dict[str, int]:
    """Examples the reference builds from each day file (its distinct request rows)."""
    import pandas as pd

    return {day: len(pd.read_feather(raw / "all_stage" / f"{day}.feather", columns=REQUEST_COLUMNS).drop_duplicates())
            for day in days}


# --------------------------------------------------------------------------------------------
# The reference copies


def reference_copy(source: Path, dest: Path, raw: Path, train_days: list[str], test_day: str, epochs: int,
                   test_scripts: Sequence[str]) -> Path:
    """A copy of ``source`` whose day lists name the simulated days (nothing else is edited).

    ``deep_components/file_1st.txt`` lists ``train_days`` ``epochs`` times over, and
    ``eval_day_list`` in each of ``test_scripts`` becomes ``[test_day]``; ``data`` links to ``raw``.
    """
    marker = dest / "parity_source.json"
    stamp = {"source": str(source.resolve()), "commit": git_commit(source), "raw": str(raw.resolve()),
             "train_days": train_days, "test_day": test_day, "epochs": epochs}
    if marker.exists() and json.loads(marker.read_text()) == stamp:
        return dest
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(source, dest, symlinks=True, ignore=shutil.ignore_patterns(".git", "data", "__pycache__"))
    day_file = dest / "deep_components" / "file_1st.txt"
    if not day_file.exists():
        raise SystemExit(f"{source} has no deep_components/file_1st.txt: not the expected reference layout")
    day_file.write_text("\n".join(train_days * epochs))
    for script in test_scripts:
        path = dest / "deep_components" / script
        text, count = re.subn(r"eval_day_list\s*=\s*\[[^\]]*\]", f"eval_day_list = ['{test_day}']",
                              path.read_text())
        if count != 1:
            raise SystemExit(f"{path}: expected one eval_day_list assignment, found {count}")
        path.write_text(text)
    (dest / "data").symlink_to(raw.resolve(), target_is_directory=True)
    for folder in ("logs", "checkpoints"):
        (dest / folder).mkdir(exist_ok=True)
    marker.write_text(json.dumps(stamp, indent=2) + "\n")
    return dest


def reference_temperature(root: Path, stages: int, loss: str) -> float | None:
    """The operator temperature the reference's loss uses (its ``tau = <value>``), or None."""
    name = TEMPERATURE_FILES.get(loss)
    if name is None:
        return None
    path = root / "deep_components" / "loss" / f"{'two' if stages == 2 else 'three'}_stage" / name
    match = re.search(r"\btau\s*=\s*([0-9]+(?:\.[0-9]*)?)", path.read_text()) if path.exists() else None
    if match is None:
        raise SystemExit(f"no tau = <value> in {path}: cannot match the reference's temperature")
    return float(match.group(1))


def run_tag(root: Path, stages: int, loss: str) -> str:
    """The ``<tau>`` argument of the reference's own ``<stages>_stage/<loss>.sh`` (it only names
    the logs and checkpoints; the loss code fixes its temperature)."""
    script = root / f"{'two' if stages == 2 else 'three'}_stage" / f"{loss}.sh"
    match = re.search(rf'run_x{stages}\.sh\s+"all"\s+"{re.escape(loss)}"\s+\S+\s+(\S+)', script.read_text()) \
        if script.exists() else None
    return match.group(1) if match else "0"


def parse_test_log(text: str) -> dict[str, dict[str, float]]:
    """``{stage: {metric: value}}`` from the ``metrics\\t<loss>\\t<stage>\\t...`` header / value
    line pairs of a reference TEST log."""
    rows = [line.rstrip("\n").split("\t") for line in text.splitlines() if line.startswith("metrics\t")]
    out: dict[str, dict[str, float]] = {}
    for header, values in zip(rows[::2], rows[1::2]):
        if header[:3] != values[:3] or len(header) != len(values):
            continue
        for key, value in zip(header[3:], values[3:]):
            try:
                out.setdefault(header[2], {})[key] = float(value)
            except ValueError:
                pass
    return out


def reference_result(test_log: Path, train_log: Path, stages: int, epochs: int, steps: int) -> dict:
    """The metrics of a reference TEST log and the timings of its TRAIN log (``time_used``: the
    whole training script; ``init data time``: loading each day)."""
    metrics = parse_test_log(test_log.read_text(errors="replace")) if test_log.exists() else {}
    train_text = train_log.read_text(errors="replace") if train_log.exists() else ""
    used = re.findall(r"time_used:([0-9.eE+-]+)", train_text)
    if "joint" not in metrics or not used:
        raise RuntimeError(f"no metrics in {test_log} or no time_used in {train_log}:\n"
                           f"{tail(train_log)}\n...\n{tail(test_log)}")
    seconds = float(used[-1])
    loading = sum(float(v) for v in re.findall(r"init data time: ([0-9.eE+-]+)", train_text))
    out = {"joint": metrics["joint"]["joint_recall"], "train_seconds": seconds, "seconds_per_epoch": seconds / epochs,
           "data_seconds": loading, "steps": steps, "step_ms": 1e3 * (seconds - loading) / steps}
    for key, ref_name, q in STAGES[stages]:
        out[key] = metrics.get(ref_name, {}).get(f"RECALL@{K}@{q}")
    return out


def run_lcron(copy: Path, loss: str, stages: int, seed: int, args, tools: tuple[Path, Path], steps: int) -> dict:
    cache = copy / "parity_runs" / f"{loss}_seed{seed}.json"
    settings = {"loss": loss, "seed": seed, "batch_size": args.batch_size, "lr": args.lr, "epochs": args.epochs}
    if cache.exists() and (done := json.loads(cache.read_text())).get("settings") == settings:
        return done
    tag, lr, bs, tau = SEED_TAG + seed, f"{args.lr:g}", args.batch_size, run_tag(copy, stages, loss)
    name = f"bs-{bs}_lr-{lr}_tau{tau}_{loss}-1st_E{tag}_S{stages}.log"
    for kind in ("TRAIN", "TEST"):
        (copy / "logs" / f"{kind}_{name}").unlink(missing_ok=True)
    folder = "two_stage" if stages == 2 else "three_stage"
    print(f"  LCRON code: {loss} seed {seed}", flush=True)
    run_logged(["bash", f"{folder}/run_x{stages}.sh", "all", loss, 0, tau, tag, ".", lr, bs],
               copy / "parity_runs" / f"{loss}_seed{seed}.log", cwd=copy, env=reference_env(*tools, seed))
    result = reference_result(copy / "logs" / f"TEST_{name}", copy / "logs" / f"TRAIN_{name}", stages, args.epochs,
                              steps)
    result.update(settings=settings, command=f"PYTHONPATH=. bash {folder}/run_x{stages}.sh all {loss} 0 "
                  f"{tau} {tag} . {lr} {bs}")
    cache.write_text(json.dumps(result, indent=2) + "\n")
    return result


def run_dftopk(copy: Path, loss: str, python: Path, args, tools: tuple[Path, Path], steps: int) -> dict:
    """One run of the DFTopK code's two-stage scripts (they seed themselves with 42)."""
    cache = copy / "parity_runs" / f"{loss}.json"
    settings = {"loss": loss, "batch_size": args.batch_size, "lr": args.lr, "epochs": args.epochs}
    if cache.exists() and (done := json.loads(cache.read_text())).get("settings") == settings:
        return done
    loss_type, tau = DFTOPK_LOSSES[loss]
    lr, bs = f"{args.lr:g}", args.batch_size
    common = [f"--epochs={SEED_TAG}", f"--loss_type={loss_type}", f"--tau={tau:g}", f"--batch_size={bs}",
              f"--infer_realshow_batch_size={bs}", f"--infer_recall_batch_size={bs}", f"--emb_dim={EMBEDDING_DIM}",
              f"--lr={lr}", "--seq_len=50", "--cuda=0", "--root_path=.", "--print_freq=100", "--sample_num=0",
              f"--tag={loss_type}-1st"]
    train_log, test_log = copy / "logs" / f"TRAIN_{loss}.log", copy / "logs" / f"TEST_{loss}.log"
    env = reference_env(*tools, 0)
    print(f"  DFTopK code: {loss_type}", flush=True)
    run_logged([python, "-B", "-u", "deep_components/run_train2_negativesampling.py", *common,
                "--sort_type=neural_sort"], train_log, cwd=copy, env=env)
    run_logged([python, "-B", "-u", "deep_components/run_test2_negativesampling_exp.py", *common], test_log,
               cwd=copy, env=env)
    result = reference_result(test_log, train_log, 2, args.epochs, steps)
    result.update(settings=settings, loss_type=loss_type, tau=tau,
                  command=f"PYTHONPATH=. python deep_components/run_train2_negativesampling.py {' '.join(common)} "
                          "--sort_type=neural_sort; ... run_test2_negativesampling_exp.py (same arguments)")
    cache.parent.mkdir(exist_ok=True)
    cache.write_text(json.dumps(result, indent=2) + "\n")
    return result


# --------------------------------------------------------------------------------------------
# tfcascade


def logged_metrics(model_dir: Path, data: Path, stages: int) -> dict:
    """Joint and per-stage recall of a trained cascade on the eval lists' logged items only."""
    import numpy as np

    from bench.cascade import eval_arrays
    from tfcascade.features import STAGE_CODES
    from tfcascade.metrics.functions import joint_recall, stage_recall
    from tfcascade.training.trainer import load_model

    model = load_model(str(model_dir))
    if int(model.k) != K or tuple(model.qs) != QS[stages]:
        raise RuntimeError(f"{model_dir}: k={model.k}, qs={model.qs}; the reference uses k={K}, qs={QS[stages]}")
    ev = eval_arrays(model, data)
    logged = (ev["mask"] > 0) & (ev["stage"] != STAGE_CODES["sampled_neg"])
    top = -np.sort(-np.where(logged, ev["label"], -np.inf), axis=-1)
    out = {"joint": joint_recall(ev["label"], ev["scores"], K, QS[stages], mask=logged),
           "requests": int(len(logged)),
           "full_lists": float((logged.sum(-1) == LIST_SIZE[stages]).mean()),
           "gt_tie_free": float((top[:, K - 1] > top[:, K]).mean())}
    for t, (key, _, q) in enumerate(STAGES[stages]):
        out[key] = stage_recall(ev["label"], ev["scores"][:, t], K, q, mask=logged)
    return out


def run_tfcascade(data: Path, run_dir: Path, loss: str, stages: int, seed: int, tau: float | None, steps: int,
                  args) -> dict:
    cache = run_dir / "parity.json"
    settings = {"loss": loss, "seed": seed, "batch_size": args.batch_size, "lr": args.lr, "epochs": args.epochs,
                "temperature": tau, "steps_per_epoch": steps, "adam_epsilon": ADAM_EPSILON,
                "sampled_protocol": "slots" if loss in DFTOPK_LOSSES else "distinct items"}
    if cache.exists() and (done := json.loads(cache.read_text())).get("settings") == settings:
        if not LOGGED_KEYS <= set(done):  # recorded before a metric was added: evaluate again
            done.update(logged_metrics(run_dir, data, stages))
            cache.write_text(json.dumps(done, indent=2) + "\n")
        return done
    shutil.rmtree(run_dir, ignore_errors=True)
    cmd = ["train", "--data", data, "--stages", stages, "--loss", loss, "--batch-size", args.batch_size,
           "--lr", f"{args.lr:g}", "--adam-epsilon", f"{ADAM_EPSILON:g}", "--embedding-dim", EMBEDDING_DIM,
           "--epochs", args.epochs, "--seed", seed, "--steps-per-epoch", steps, "--model-dir", run_dir]
    if tau is not None:
        cmd += ["--temperature", f"{tau:g}"]
    print(f"  tfcascade: {loss} seed {seed}", flush=True)
    run_logged(tfcascade_cli(*cmd), run_dir.parent / f"{run_dir.name}.log", env=quiet_env())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    result = logged_metrics(run_dir, data, stages)
    sampled = {"joint": metrics["joint_recall"], **{key: metrics.get(f"{key}_recall") for key, _, _ in STAGES[stages]}}
    if loss in DFTOPK_LOSSES:  # the DFTopK code's protocol: 160 negatives from the batch's other slots
        from bench.cascade import slot_negatives_joint
        from tfcascade.training.trainer import load_model

        sampled = {"joint": slot_negatives_joint(load_model(str(run_dir)), data, seed, args.batch_size),
                   **{key: None for key, _, _ in STAGES[stages]}}
    result.update(settings=settings, steps=int(metrics["steps"]), train_seconds=float(metrics["train_seconds"]),
                  seconds_per_epoch=float(metrics["train_seconds"]) / args.epochs,
                  train_step_ms=float(metrics["train_step_ms"]),
                  sampled=sampled,
                  command="tfcascade " + " ".join(map(str, cmd)))
    cache.write_text(json.dumps(result, indent=2) + "\n")
    return result


# --------------------------------------------------------------------------------------------
# Tables and plot


def summarise(runs: list[dict], stages: int, sampled: bool = False) -> dict:
    keys = ["joint", *(key for key, _, _ in STAGES[stages])]
    source = [r["sampled"] for r in runs] if sampled else runs
    out = {key: mean_std([r.get(key) for r in source]) for key in keys}
    for key in ("seconds_per_epoch", "step_ms", "train_step_ms", "steps"):
        if any(key in r for r in runs):
            out[key] = mean_std([r.get(key) for r in runs])
    out["n"] = len(runs)
    return out


def plot(rows: dict, stages: int, title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = list(rows)
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(5.0, 1.0 + 0.9 * len(names)), 3.8))
    for offset, side, label, color in ((-0.2, "reference", "official code", "tab:gray"),
                                       (0.2, "tfcascade", "tfcascade", "tab:blue")):
        means = [rows[n][side]["joint"]["mean"] or 0.0 for n in names]
        stds = [rows[n][side]["joint"]["std"] for n in names]
        ax.bar(x + offset, means, 0.4, yerr=stds, capsize=3, label=label, color=color)
    labels = [f"{n}\n(+160 neg.)" if rows[n]["metric"] == "sampled" else n for n in names]
    ax.set_xticks(x, labels)
    ax.set_ylabel(f"Joint Recall@{K}@{QS[stages][-1]} (mean ± std)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    plt.setp(ax.get_xticklabels(), rotation=30, ha="right", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def agreement(ref: dict, ours: dict) -> dict:
    """tfcascade − code on the joint recall, the goal's tolerance max(0.01, 2 × the larger std)
    and whether the gap lies within it."""
    if ours["joint"]["mean"] is None or ref["joint"]["mean"] is None:
        return {"gap": None, "tolerance": None, "within": None}
    gap = ours["joint"]["mean"] - ref["joint"]["mean"]
    tolerance = max(TOLERANCE_FLOOR, 2 * max(ref["joint"]["std"], ours["joint"]["std"]))
    return {"gap": gap, "tolerance": tolerance, "within": abs(gap) <= tolerance}


def goal_lines(rows: dict) -> list[str]:
    """The parity goal, checked: the losses within tolerance, and LCRON / DFTopK against BCE on
    the logged items on each side."""
    within = [name for name, row in rows.items() if row["agreement"]["within"]]
    outside = [f"{name} ({row['agreement']['gap']:+.4f}, tolerance {row['agreement']['tolerance']:.4f})"
               for name, row in rows.items() if row["agreement"]["within"] is False]
    lines = [f"- Within max({TOLERANCE_FLOOR:g}, 2 × the larger std) of the official code: {len(within)} of "
             f"{len(rows)} losses" + (f"; outside: {', '.join(outside)}." if outside else ".")]
    if "bce" in rows:
        for name in ("lcron", "dftopk"):
            if name in rows:
                ours = rows[name]["tfcascade_logged"]["joint"]["mean"] - rows["bce"]["tfcascade_logged"]["joint"]["mean"]
                ref = (rows[name]["reference"]["joint"]["mean"] - rows["bce"]["reference"]["joint"]["mean"]
                       if rows[name]["metric"] == "logged" else None)
                lines.append(f"- {name} − bce on the logged items: tfcascade {ours:+.4f}"
                             + (f", official code {ref:+.4f}." if ref is not None else
                                " (the DFTopK code reports only its +160-negatives protocol)."))
    return lines


def quality_table(rows: dict, stages: int) -> str:
    stage_cols = [(key, f"{key} R@{K}@{q}") for key, _, q in STAGES[stages]]
    headers = ["loss", "τ", "runs (code / tfcascade)", f"official code: joint R@{K}@{QS[stages][-1]}",
               "tfcascade", "tfcascade − code", "tolerance", "within"]
    for _, title in stage_cols:
        headers += [f"code: {title}", "tfcascade"]
    headers.append("tfcascade, +160 sampled negatives")
    body = []
    for name, row in rows.items():
        ref, ours, agreed = row["reference"], row["tfcascade"], row["agreement"]
        cells = [name + (" (+160 neg.)" if row["metric"] == "sampled" else ""),
                 "—" if row["temperature"] is None else f"{row['temperature']:g}",
                 f"{ref['n']} / {ours['n']}", fmt(ref["joint"]), fmt(ours["joint"]),
                 "—" if agreed["gap"] is None else f"{agreed['gap']:+.4f}",
                 "—" if agreed["tolerance"] is None else f"{agreed['tolerance']:.4f}",
                 {True: "yes", False: "**no**", None: "—"}[agreed["within"]]]
        for key, _ in stage_cols:
            cells += [fmt(ref[key]), fmt(ours[key])]
        cells.append(fmt(row["tfcascade_sampled"]["joint"]))
        body.append(cells)
    return markdown_table(headers, body)


def cost_table(rows: dict) -> str:
    body = []
    for name, row in rows.items():
        ref, ours = row["reference"], row["tfcascade"]
        body.append([name, fmt(ref["seconds_per_epoch"], 1), fmt(ours["seconds_per_epoch"], 1),
                     fmt(ref.get("step_ms"), 0), fmt(ours["train_step_ms"], 0), fmt(ref["steps"], 0),
                     fmt(ours["steps"], 0)])
    return markdown_table(["loss", "official code: s / epoch", "tfcascade: s / epoch",
                           "official code: ms / step", "tfcascade: ms / step (median)", "code: steps",
                           "tfcascade: steps"], body)


def definitions(stages: int, facts: dict) -> list[str]:
    """The metric and training definitions; ``facts``: ``full_lists`` / ``gt_tie_free`` (shares
    of test requests, from the tfcascade runs) and ``dftopk`` (a DFTopK row is shown)."""
    from tfcascade.data.tfdata import SHUFFLE_BATCHES

    qs = QS[stages]
    chain = " → ".join(str(q) for q in qs)
    stage_list = ", ".join(f"{key} Recall@{K}@{q} (`{ref_name}` in the reference's log)"
                           for key, ref_name, q in STAGES[stages])
    gt_stage = "rank_pos" if stages == 2 else "rerank_pos"
    labels = ("the reference's labels: 30 − rank_index for rank_pos, 7 / 6 / 5 for rank_neg / coarse_neg / "
              "prerank_neg (padding 0); tfcascade's: the same (rank_pos at least 9)" if stages == 2 else
              "the reference's labels: 30 − rerank_index for rerank_pos, 8 for rerank_neg, 7 / 6 / 5 for "
              "rank_neg / coarse_neg / prerank_neg (padding 0); tfcascade's: the same (rerank_pos at least 9)")
    full, tie_free = facts.get("full_lists"), facts.get("gt_tie_free")
    if full == 1.0:
        padding = ("Every test list here has all its slots logged, so the padding difference does not arise; "
                   "the two joint recalls are the same quantity on different request subsets.")
    else:
        padding = (f"Only {percent(full)} of the test lists here have all {LIST_SIZE[stages]} slots logged: "
                   "on the others the reference's cuts can also keep padding slots (zero features, label 0), "
                   "which tfcascade never selects, so the two joint recalls are not exactly the same quantity.")
    lines = [
        "### How the numbers are defined",
        "",
        f"- **Joint Recall@{K}@{qs[-1]}** (both sides): the logged items of a test request (up to "
        f"{LIST_SIZE[stages]}) pass the hard cascade {chain}: each stage keeps the top q, by its own score, of "
        f"what the previous stage kept. Recall = |kept ∩ ground truth| / {K}; ground truth = the {K} logged "
        f"items with the highest graded labels, on both sides the {K} {gt_stage} items ({labels}). "
        "Mean over test requests.",
        f"- **Single stage**: {stage_list}, each stage alone on all logged items.",
        "- Where: LCRON code `deep_components/metrics.py` (`two_stage_recall` / `three_stage_recall`, "
        "`calc_set_recall`), printed as `metrics\\t<loss>\\t<stage>\\t…` lines in `logs/TEST_*.log`; "
        "tfcascade `tfcascade.metrics.functions.joint_recall` / `stage_recall` on its eval split with the "
        "sampled negatives masked out (`bench.cascade.eval_arrays`).",
        "- Differences: the reference scores full batches only (the last `requests mod batch size` test "
        "requests are left out), shuffles each list (numpy seed 1024), breaks ties at random, divides by 10 "
        "whatever the number of valid items, and lets its cuts pick padding slots; tfcascade scores every "
        "test request, breaks ties towards the lower index, divides by min(10, valid items) and never "
        f"selects padding. The ground truth has no tie at its boundary on {percent(tie_free)} of the test "
        f"requests. {padding}",
    ]
    if facts.get("dftopk"):
        lines.append("- `+160 neg.` rows (DFTopK code): its test script appends 160 negatives sampled from the "
                     "other requests of the batch (label 0) and reports the same joint recall on those 200 "
                     "items; the tfcascade number next to it is drawn the same way (`bench.cascade.slot_negatives_joint`: "
                     "160 of the other requests' logged slots of each test batch of the training batch size, without "
                     "replacement, the last partial batch dropped).")
    lines.append(
        f"- Training: same batch size, learning rate, Adam ε ({ADAM_EPSILON:g}, PyTorch's default), embedding "
        "size, temperature and number of Adam steps. "
        "The reference shuffles within each day, visits the days in date order and drops each day's last "
        "partial batch; tfcascade reads its training file (one shard, written in date order) through "
        f"a shuffle buffer of {SHUFFLE_BATCHES} batches, so it too visits the days in date order, shuffled locally "
        "(`--steps-per-epoch` = the reference's step count). Seconds per epoch: the reference's "
        "`time_used` (its whole training script, day loading included) / epochs, its ms / step = "
        "(`time_used` − the days' `init data time`) / steps (data loader and all); tfcascade's "
        "`train_seconds` (the fit, first-step tracing included) / epochs and the median step of its "
        "step timer. One process runs its runs one after another; where other work shared the cores "
        "(see the machine line), the seconds of both sides are inflated by it.")
    return lines


# --------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", required=True, help=f"local clone of {LCRON_URL}")
    parser.add_argument("--dftopk-reference", default=None, help=f"local clone of {DFTOPK_URL} (adds loss dftopk)")
    parser.add_argument("--torch-python", default=None,
                        help=f"python with torch, pandas, pyarrow, scikit-learn (default: {TORCH_VENV})")
    parser.add_argument("--preset", default="small", choices=("tiny", "small", "medium"))
    parser.add_argument("--data-seeds", type=int, nargs="+", default=[11, 12])
    parser.add_argument("--train-seeds", type=int, default=3, help="training seeds per data seed: 0 .. N-1")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--losses", default=",".join(LCRON_LOSSES))
    parser.add_argument("--stages", type=int, nargs="+", default=[2], choices=(2, 3))
    parser.add_argument("--work", default=None, help="folder for data, reference copies and runs "
                        "(default: a new temp folder; reuse one to resume)")
    parser.add_argument("--out", default=str(RESULTS_DIR))
    parser.add_argument("--name", default="parity",
                        help="result files <name>.md/.json/_<S>stage.png (e.g. to keep runs with other losses apart)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: tiny preset, one data seed, one training seed, bce and lcron")
    args = parser.parse_args(argv)
    if args.quick:
        args.preset, args.data_seeds, args.train_seeds, args.losses = "tiny", args.data_seeds[:1], 1, "bce,lcron"
    losses = [name for name in args.losses.split(",") if name]
    if args.dftopk_reference and "dftopk" not in losses:
        losses.append("dftopk")
    for name in losses:
        if name not in LCRON_LOSSES and not (name in DFTOPK_LOSSES and args.dftopk_reference):
            parser.error(f"loss {name!r}: the LCRON code has {', '.join(LCRON_LOSSES)}"
                         + ("; dftopk needs --dftopk-reference" if name in DFTOPK_LOSSES else ""))
    if args.train_seeds <= 0 or args.epochs <= 0 or args.batch_size <= 0:
        parser.error("--train-seeds, --epochs and --batch-size must be > 0")
    reference = Path(args.reference).expanduser().resolve()
    if not (reference / "two_stage" / "run_x2.sh").exists():
        parser.error(f"--reference {reference} is not a clone of {LCRON_URL} (no two_stage/run_x2.sh)")
    dftopk = Path(args.dftopk_reference).expanduser().resolve() / "torch" if args.dftopk_reference else None
    if dftopk is not None and not (dftopk / "deep_components" / "run_train2_negativesampling.py").exists():
        parser.error(f"--dftopk-reference: no torch/deep_components/run_train2_negativesampling.py under {dftopk.parent}")
    work = Path(args.work or tempfile.mkdtemp(prefix="tfcascade-parity-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    python = torch_python(args.torch_python)
    torch_version = subprocess.run([str(python), "-c", "import torch; print(torch.__version__)"],
                                   capture_output=True, text=True, check=True).stdout.strip()
    tools = seed_tools(python, work)
    print(f"work folder {work}; reference python {python} (torch {torch_version})", flush=True)
    setting_name = f"bs{args.batch_size}_lr{args.lr:g}_ep{args.epochs}"

    payload: dict = {"setting": {
        "preset": args.preset, "data_seeds": args.data_seeds, "train_seeds": list(range(args.train_seeds)),
        "batch_size": args.batch_size, "lr": args.lr, "epochs": args.epochs, "embedding_dim": EMBEDDING_DIM,
        "k": K, "losses": losses, "reference": {"url": LCRON_URL, "commit": git_commit(reference)},
        "dftopk_reference": {"url": DFTOPK_URL, "commit": git_commit(dftopk.parent)} if dftopk else None,
        "reference_python": str(python), "reference_torch": torch_version,
        "reference_seeding": f"torch/numpy/random seeded with the training seed through {SEED_ENV} "
                             "(sitecustomize; the LCRON code sets no training seed); the DFTopK code seeds 42"}}
    parts: list[str] = []
    result_name = args.name + ("_quick" if args.quick else "")
    for stages in args.stages:
        runs: dict = {name: {"reference": [], "tfcascade": []} for name in losses}
        data_info = []
        temperatures: dict[str, float | None] = {}
        for data_seed in args.data_seeds:
            raw = simulate(args.preset, data_seed, work)
            days = day_names(raw)
            train_days, test_day = days[:-1], days[-1]
            prep = preprocess(raw, stages, train_days, test_day)
            counts = requests_per_day(raw, days)
            steps_per_epoch = sum(counts[d] // args.batch_size for d in train_days)
            if steps_per_epoch == 0:
                raise SystemExit(f"batch size {args.batch_size} is larger than every training day "
                                 f"({counts}): the reference would train no step")
            data_info.append({"data_seed": data_seed, "train_days": train_days, "test_day": test_day,
                              "requests_per_day": counts, "steps_per_epoch": steps_per_epoch,
                              "reference_test_requests": counts[test_day] // args.batch_size * args.batch_size})
            copy = reference_copy(reference, work / "lcron" / f"{args.preset}_seed{data_seed}_{stages}stage_ep{args.epochs}",
                                  raw, train_days, test_day, args.epochs, [f"run_test{stages}.py"])
            tfc_root = work / "tfcascade" / f"{args.preset}_seed{data_seed}_{stages}stage_{setting_name}"
            for name in losses:
                if name in DFTOPK_LOSSES:
                    if stages != 2:
                        continue
                    tau = DFTOPK_LOSSES[name][1]
                    dcopy = reference_copy(dftopk, work / "dftopk" / f"{args.preset}_seed{data_seed}_ep{args.epochs}",
                                           raw, train_days, test_day, args.epochs,
                                           ["run_test2_negativesampling_exp.py"])
                    runs[name]["reference"].append(
                        run_dftopk(dcopy, name, python, args, tools, steps_per_epoch * args.epochs))
                else:
                    tau = reference_temperature(copy, stages, name)
                temperatures[name] = tau
                for seed in range(args.train_seeds):
                    if name not in DFTOPK_LOSSES:
                        runs[name]["reference"].append(
                            run_lcron(copy, name, stages, seed, args, tools, steps_per_epoch * args.epochs))
                    runs[name]["tfcascade"].append(
                        run_tfcascade(prep, tfc_root / name / f"seed{seed}", name, stages, seed, tau,
                                      steps_per_epoch, args))
        rows = {}
        for name in losses:
            if not runs[name]["tfcascade"]:
                continue
            sampled = name in DFTOPK_LOSSES
            ref_runs, our_runs = runs[name]["reference"], runs[name]["tfcascade"]
            rows[name] = {"metric": "sampled" if sampled else "logged", "temperature": temperatures[name],
                          "reference": summarise(ref_runs, stages),
                          "tfcascade": summarise(our_runs, stages, sampled=sampled),
                          "tfcascade_logged": summarise(our_runs, stages),
                          "tfcascade_sampled": summarise(our_runs, stages, sampled=True),
                          "runs": runs[name]}
            rows[name]["agreement"] = agreement(rows[name]["reference"], rows[name]["tfcascade"])
        png = f"{result_name}_{stages}stage.png"
        n_runs = len(args.data_seeds) * args.train_seeds
        title = (f"{stages} stages, {args.preset} preset, {len(args.data_seeds)} data seed(s) × "
                 f"{args.train_seeds} training seed(s)")
        plot(rows, stages, title, Path(args.out) / png)
        payload[f"{stages}stage"] = {"data": data_info, "losses": rows}
        ours = [r for name in rows for r in rows[name]["runs"]["tfcascade"]]
        facts = {key: statistics.fmean(r[key] for r in ours) if all(key in r for r in ours) else None
                 for key in ("full_lists", "gt_tie_free")}
        facts["dftopk"] = any(row["metric"] == "sampled" for row in rows.values())
        info = data_info[0]
        steps = sorted({d["steps_per_epoch"] for d in data_info})
        parts += [
            f"## {stages} stages",
            "",
            f"{args.preset} preset, data seeds {', '.join(map(str, args.data_seeds))}: train on "
            f"{len(info['train_days'])} days ({info['train_days'][0]} … {info['train_days'][-1]}), test on "
            f"{info['test_day']} ({', '.join(str(d['requests_per_day'][d['test_day']]) for d in data_info)} "
            f"requests; the reference scores {', '.join(str(d['reference_test_requests']) for d in data_info)}). "
            f"Batch {args.batch_size}, lr {args.lr:g}, embedding 8, {args.epochs} epoch(s) = "
            f"{' / '.join(str(s * args.epochs) for s in steps)} Adam steps on both sides; "
            f"{args.train_seeds} training seed(s) per data seed ({n_runs} runs a loss; the DFTopK code: one "
            "per data seed). Mean ± sample std over runs.",
            "",
            f"### Joint Recall@{K}@{QS[stages][-1]} on the logged items",
            "",
            quality_table(rows, stages),
            "",
            *goal_lines(rows),
            "",
            f"![joint recall, {stages} stages]({png})",
            "",
            "### Training cost",
            "",
            cost_table(rows),
            "",
            *definitions(stages, facts),
            "",
        ]
    header = [
        "# Parity with the official LCRON code" + (" and DFTopK code" if dftopk else ""),
        "",
        f"Official code: {LCRON_URL} @ {payload['setting']['reference']['commit'] or 'unknown commit'}"
        + (f", {DFTOPK_URL} @ {payload['setting']['dftopk_reference']['commit'] or 'unknown commit'}" if dftopk else "")
        + f", run with torch {torch_version}; tfcascade from this repository. The LCRON code sets no "
        "training seed: each of its runs seeds torch, numpy and random with the training seed through the "
        "environment (a `sitecustomize`)" + ("; the DFTopK code seeds itself (42)." if dftopk else "."),
        "",
        "Command: `python -m bench.parity " + " ".join(argv if argv is not None else sys.argv[1:]) + "`",
        "",
    ]
    md = "\n".join(header + parts)
    write_results(result_name, payload, md, Path(args.out))
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
