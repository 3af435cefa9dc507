"""TopKGAT side by side with the official PyTorch implementation, on the official protocol.

For every dataset and seed, runs

* the official code (github.com/StupidThree/TopKGAT) from a local clone given by ``--reference``
  with the PyTorch interpreter given by ``--torch-python``, with its README's command line
  for the dataset (on CPU: a small shim sets ``args.device`` to CPU and records the time of
  every training epoch, every evaluation and the peak RSS; the official code itself runs
  unmodified and is never copied into this project);
* ours: ``tfcascade topkgat --data DIR --seed S --out ...`` with **no** hyperparameter flag,
  so the CLI defaults are what is compared;

and writes test Recall/NDCG@10/@20 (at the best validation epoch), best epoch, epochs run,
seconds per training epoch and peak RSS for both sides to ``bench/results/<name>.md/.json``,
plus a plot of the validation NDCG@20 curves and the test NDCG@20 of both sides.
The goal reads: ours mean ≥ official mean − 1 std on test Recall@20 and NDCG@20, and seconds
per epoch ≤ official; the goals table gives the gap of the means, the official std and the gap
in standard errors of the difference (Welch) next to the verdict.

    .venv/bin/python -m bench.topkgat_parity --reference /tmp/TopKGAT \\
        --torch-python /tmp/torchvenv/bin/python                        # 3 datasets × 3 seeds
    .venv/bin/python -m bench.topkgat_parity --reference /tmp/TopKGAT \\
        --torch-python /tmp/torchvenv/bin/python --datasets Ali-Display --seeds 1 \\
        --epochs 40 --name topkgat_parity_quick                          # a short check

Runs are interleaved (official, ours) per dataset and seed so that both sides see similar
machine load, and each is saved as it finishes: ``--resume`` skips the runs already in the
results file. Full-length runs on 2 cores, idle: Ali-Display ~950 epochs (official
0.7–0.8 s/epoch, 12–13 min in all; ours 0.3 s/epoch, 4 min), Epinions 1,300–1,700 (official
2.4–2.6 s/epoch, 60–70 min; ours 0.5–0.7, 14–16 min), Food 1,250–2,000 (official 3.6 s/epoch,
77 min; ours 0.7–0.9, 17–31 min): three seeds of the three data sets need ~7 h, most of it
the official side.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import RESULTS_DIR, markdown_table, write_results

DATASETS = ("Ali-Display", "Epinions", "Food")
# The official README's command line per dataset (flags of its code/parse.py).
README_FLAGS = {
    "Ali-Display": ["--TopKformer_layers=4", "--emb_learning_rate=1e-1", "--emb_reg_lambda=1e-4"],
    "Epinions": ["--TopKformer_layers=4", "--emb_learning_rate=1e-1", "--emb_reg_lambda=1e-4"],
    "Food": ["--TopKformer_layers=4", "--emb_learning_rate=1e-2", "--emb_reg_lambda=0"],
}
METRICS = ("recall@20", "ndcg@20", "recall@10", "ndcg@10")
GOAL_METRICS = ("recall@20", "ndcg@20")

# Runs the official main.py unmodified on CPU and records timings and evaluations (our code).
SHIM = r'''
import json, resource, runpy, sys, time
code_dir, out_path = sys.argv[1], sys.argv[2]
sys.argv = [code_dir + "/main.py"] + sys.argv[3:]
sys.path.insert(0, code_dir)
import torch
import parse
parse.args.device = torch.device("cpu")
import model as ref
state = {"epoch": 0, "times": [], "evals": []}
_train, _eval = ref.Model.train_emb, ref.Model.evaluate
def train_emb(self, epoch):
    state["epoch"] = epoch
    t0 = time.perf_counter()
    loss = _train(self, epoch)
    state["times"].append(time.perf_counter() - t0)
    return loss
def evaluate(self, batch, degree):
    pre, recall, ndcg = _eval(self, batch, degree)
    split = "valid" if batch is self.dataset.valid_batch else "test"
    ks = parse.args.topks
    state["evals"].append({"epoch": state["epoch"], "split": split,
                           **{f"recall@{k}": float(recall[i]) for i, k in enumerate(ks)},
                           **{f"ndcg@{k}": float(ndcg[i]) for i, k in enumerate(ks)}})
    return pre, recall, ndcg
ref.Model.train_emb, ref.Model.evaluate = train_emb, evaluate
t0 = time.perf_counter()
main = runpy.run_path(code_dir + "/main.py", run_name="__main__")
m, ks = main["model"], parse.args.topks
times = state["times"]
json.dump({
    "best_epoch": int(m.best_epoch), "epochs_run": len(times),
    "test": {**{f"recall@{k}": float(m.test_recall[i]) for i, k in enumerate(ks)},
             **{f"ndcg@{k}": float(m.test_ndcg[i]) for i, k in enumerate(ks)}},
    "seconds_per_epoch": sum(times[1:]) / max(1, len(times) - 1),
    "total_seconds": time.perf_counter() - t0,
    "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
    "history": [{k: v for k, v in e.items() if k != "split"} for e in state["evals"] if e["split"] == "valid"],
}, open(out_path, "w"))
'''


def _data_root(arg: str | None) -> Path:
    if arg:
        return Path(arg)
    return Path(os.environ.get("TFCASCADE_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data")) / "topkgat"


def _code_dir(reference: Path) -> Path:
    for candidate in (reference / "code", reference):
        if (candidate / "main.py").is_file() and (candidate / "model.py").is_file():
            return candidate
    raise SystemExit(f"--reference {reference}: no code/main.py of the official TopKGAT code there")


def _reference_commit(reference: Path) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(reference), "rev-parse", "HEAD"], capture_output=True,
                             text=True, check=False).stdout.strip()
        return out or None
    except OSError:
        return None


def run_shim(torch_python: str, shim: str, code_dir: Path, data_dir: Path, dataset: str, out: Path,
             shim_args: list[str], flags: list[str]) -> None:
    """Runs ``shim`` (Python source) with the official code's interpreter in a scratch folder
    where ``./data/<dataset>`` is the dataset (the official code reads that path).

    The shim's arguments: ``code_dir``, ``out`` (where it writes its results), ``shim_args``,
    then the official command line: ``--data=<dataset>``, the README flags and ``flags``. Its
    output goes to ``log.txt`` in the scratch folder, and the log's tail into the error if it fails.
    """
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "data").mkdir()
        (tmp / "data" / dataset).symlink_to(data_dir / dataset)
        (tmp / "shim.py").write_text(shim)
        cmd = [torch_python, str(tmp / "shim.py"), str(code_dir), str(out), *shim_args,
               f"--data={dataset}", *README_FLAGS[dataset], *flags]
        print("running:", " ".join(cmd), flush=True)
        log = tmp / "log.txt"
        with log.open("w") as handle:
            proc = subprocess.run(cmd, cwd=tmp, stdout=handle, stderr=subprocess.STDOUT, check=False)
        if proc.returncode:
            raise SystemExit(f"official run failed ({proc.returncode}):\n{log.read_text()[-3000:]}")


def run_official(torch_python: str, code_dir: Path, data_dir: Path, dataset: str, seed: int,
                 epochs: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "official.json"
        run_shim(torch_python, SHIM, code_dir, data_dir, dataset, out, [],
                 [f"--seed={seed}", f"--max_epochs={epochs}"])
        return json.loads(out.read_text())


def run_ours(data_dir: Path, dataset: str, seed: int, epochs: int | None) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "ours.json"
        cmd = [sys.executable, "-m", "tfcascade", "topkgat", "--data", str(data_dir / dataset),
               "--seed", str(seed), "--out", str(out)]
        if epochs is not None:
            cmd += ["--epochs", str(epochs)]
        print("running:", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
        return json.loads(out.read_text())


def _mean_std(values: list[float]) -> tuple[float, float]:
    if not values:
        return float("nan"), float("nan")
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarise(runs: list[dict], datasets: list[str]) -> tuple[list[dict], str]:
    summary, rows = [], []
    for dataset in datasets:
        entry = {"dataset": dataset}
        for side in ("official", "ours"):
            mine = [r for r in runs if r["dataset"] == dataset and r["side"] == side]
            stats = {"seeds": len(mine)}
            for metric in METRICS:
                stats[metric] = _mean_std([r["test"][metric] for r in mine])
            for field in ("best_epoch", "epochs_run", "seconds_per_epoch", "peak_rss_mib"):
                stats[field] = _mean_std([float(r[field]) for r in mine])
            entry[side] = stats
            if not mine:
                rows.append([dataset, side, 0] + ["—"] * (len(METRICS) + 4))
                continue
            rows.append([dataset, side, len(mine)]
                        + [f"{stats[m][0]:.4f} ± {stats[m][1]:.4f}" for m in METRICS]
                        + [f"{stats['best_epoch'][0]:.0f}", f"{stats['epochs_run'][0]:.0f}",
                           f"{stats['seconds_per_epoch'][0]:.3f}", f"{stats['peak_rss_mib'][0]:.0f}"])
        off, ours = entry["official"], entry["ours"]
        if off["seeds"] and ours["seeds"]:
            entry["gap"] = {m: ours[m][0] - off[m][0] for m in GOAL_METRICS}
            # With one official seed there is no std to measure the gap against.
            if off["seeds"] > 1:
                entry["quality_goal_met"] = all(ours[m][0] >= off[m][0] - off[m][1] for m in GOAL_METRICS)
            if off["seeds"] > 1 and ours["seeds"] > 1:
                entry["gap_in_standard_errors"] = {m: _gap_in_standard_errors(off[m], off["seeds"],
                                                                              ours[m], ours["seeds"])
                                                   for m in GOAL_METRICS}
            entry["speed_goal_met"] = ours["seconds_per_epoch"][0] <= off["seconds_per_epoch"][0]
        summary.append(entry)
    table = markdown_table(["dataset", "side", "seeds", "test Recall@20", "test NDCG@20", "test Recall@10",
                            "test NDCG@10", "best epoch", "epochs run", "s/epoch", "peak RSS MiB"], rows)
    goals = markdown_table(
        ["dataset", "ours − official (Recall@20 / NDCG@20)", "official std", "gap / its standard error",
         "ours ≥ official − 1 std (Recall@20 and NDCG@20)", "s/epoch ours ≤ official"],
        [[e["dataset"], " / ".join(f"{e['gap'][m]:+.5f}" for m in GOAL_METRICS) if "gap" in e else "—",
          " / ".join(f"{e['official'][m][1]:.5f}" for m in GOAL_METRICS) if e["official"]["seeds"] > 1 else "—",
          " / ".join(f"{e['gap_in_standard_errors'][m]:+.1f}" for m in GOAL_METRICS)
          if "gap_in_standard_errors" in e else "—",
          _yes(e.get("quality_goal_met"), e["official"]["seeds"] == 1),
          _yes(e.get("speed_goal_met"))] for e in summary])
    return summary, f"{table}\n\n{goals}"


def _gap_in_standard_errors(official: tuple[float, float], n_official: int,
                            ours: tuple[float, float], n_ours: int) -> float:
    """(mean_ours − mean_official) / sqrt(s_official² / n_official + s_ours² / n_ours).

    Welch's t: how many standard errors of the difference of two means, each over a few seeds,
    the gap is. With 2–3 seeds a side the two-sided 5 % threshold is 2.8–4.3 (t with 2–4
    degrees of freedom), so |t| < 2 is well within seed noise.
    """
    error = math.sqrt(official[1] ** 2 / n_official + ours[1] ** 2 / n_ours)
    gap = ours[0] - official[0]
    return gap / error if error > 0 else (0.0 if gap == 0 else math.copysign(math.inf, gap))


def _yes(flag, one_seed: bool = False) -> str:
    if flag is None:
        return "— (one official seed: no std yet)" if one_seed else "—"
    return "yes" if flag else "**no**"


def plot(runs: list[dict], datasets: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(datasets), figsize=(4.2 * len(datasets), 6.4), squeeze=False)
    colours = {"official": "tab:orange", "ours": "tab:blue"}
    for col, dataset in enumerate(datasets):
        ax = axes[0][col]
        for r in runs:
            if r["dataset"] != dataset:
                continue
            curve = [(h["epoch"], h["ndcg@20"]) for h in r.get("history", [])]
            if curve:
                ax.plot(*zip(*curve), color=colours[r["side"]], alpha=0.7, lw=1,
                        label=f"{r['side']} (seed {r['seed']})")
        ax.set_title(dataset)
        ax.set_xlabel("epoch")
        ax.set_ylabel("valid NDCG@20")
        ax.legend(fontsize=6)
        # Points, not bars: the sides differ in the fourth decimal, which a bar from 0 hides.
        ax = axes[1][col]
        for j, side in enumerate(("official", "ours")):
            values = [r["test"]["ndcg@20"] for r in runs if r["dataset"] == dataset and r["side"] == side]
            if values:
                mean, std = _mean_std(values)
                ax.errorbar(j, mean, yerr=std, fmt="s", color=colours[side], capsize=6, ms=7)
                ax.scatter([j + 0.12] * len(values), values, color="k", s=10, zorder=3)
                if side == "official" and len(values) > 1:
                    ax.axhline(mean - std, color=colours[side], ls="--", lw=0.8, label="official mean − 1 std")
                    ax.legend(fontsize=6)
        ax.set_xlim(-0.6, 1.6)
        ax.set_xticks([0, 1], ["official", "ours"])
        ax.set_ylabel("test NDCG@20 (mean ± std; seeds as dots)")
    fig.suptitle("TopKGAT: ours (TF) vs official (PyTorch)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference", help="local clone of github.com/StupidThree/TopKGAT (or its code/ folder)")
    parser.add_argument("--reference-commit", default=None,
                        help="commit of the reference code, recorded in the results (default: "
                             "`git rev-parse HEAD` in --reference, if it is a git clone)")
    parser.add_argument("--torch-python", default="python3", help="interpreter with torch, numpy and pandas")
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds (0, 1, ...)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="epoch cap for both sides (default: the official cap, 2000)")
    parser.add_argument("--sides", nargs="+", default=["official", "ours"], choices=("official", "ours"))
    parser.add_argument("--data-root", default=None, help="folder holding the dataset folders "
                        "(default: $TFCASCADE_DATA_DIR/topkgat or ../shared/data/topkgat)")
    parser.add_argument("--name", default="topkgat_parity", help="results file name under bench/results/")
    parser.add_argument("--resume", action="store_true", help="keep (and skip) runs already in the results file")
    args = parser.parse_args(argv)
    if "official" in args.sides and not args.reference:
        parser.error("--reference PATH is needed to run the official side")
    data_dir = _data_root(args.data_root)
    code_dir = _code_dir(Path(args.reference)) if args.reference else None
    json_path = RESULTS_DIR / f"{args.name}.json"
    previous = json.loads(json_path.read_text()) if args.resume and json_path.is_file() else {}
    runs = previous.get("runs", [])
    epochs = args.epochs or 2000
    commit = args.reference_commit or (_reference_commit(Path(args.reference)) if args.reference else None)
    # Runs of another reference commit or epoch cap do not belong in one table.
    if previous.get("reference_commit") and commit and commit != previous["reference_commit"]:
        parser.error(f"--reference-commit {commit} differs from {previous['reference_commit']} in {json_path}")
    if previous and previous.get("epochs_cap") != epochs:
        parser.error(f"--epochs {epochs} differs from the cap {previous.get('epochs_cap')} in {json_path}")
    commit = commit or previous.get("reference_commit")

    def save():
        # The report covers every run in the file, not only this invocation's datasets and seeds.
        reported = [d for d in DATASETS if d in args.datasets or any(r["dataset"] == d for r in runs)]
        seed_list = sorted({r["seed"] for r in runs}) or list(range(args.seeds))
        seeds = ("seed " if len(seed_list) == 1 else "seeds ") + ", ".join(map(str, seed_list))
        summary, tables = summarise(runs, reported)
        png = RESULTS_DIR / f"{args.name}.png"
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        plot(runs, reported, png)
        markdown = (
            "Official code: github.com/StupidThree/TopKGAT"
            f" (commit {commit or 'unknown'}), its README command"
            " line per dataset, on CPU. Ours: `tfcascade topkgat --data DIR --seed S` with no hyperparameter"
            f" flag (the CLI defaults). Epoch cap {epochs}; {seeds} (the seeds column counts the runs per side); validation every 20"
            " epochs, stop after 200 without a better valid NDCG@20; test metrics at the best validation"
            " epoch; mean ± std over seeds. s/epoch: one training epoch (negative sampling, forward,"
            " backward, update), evaluation excluded. Both sides on the same 2 CPU cores, one run at a"
            " time, not always on an otherwise idle machine: timings are noisy.\n\n"
            f"{tables}\n\n![valid NDCG@20 curves and test NDCG@20]({png.name})\n")
        write_results(args.name, {"reference_commit": commit, "epochs_cap": epochs, "seeds": seed_list, "datasets": reported,
                                  "readme_flags": README_FLAGS, "summary": summary, "runs": runs}, markdown)
        return markdown

    for dataset in args.datasets:
        for seed in range(args.seeds):
            for side in args.sides:
                if any(r["dataset"] == dataset and r["seed"] == seed and r["side"] == side for r in runs):
                    continue
                start = time.perf_counter()
                if side == "official":
                    result = run_official(args.torch_python, code_dir, data_dir, dataset, seed, epochs)
                else:
                    result = run_ours(data_dir, dataset, seed, args.epochs)
                result.update(side=side, dataset=dataset, seed=seed, epochs_cap=epochs,
                              wall_seconds=time.perf_counter() - start,
                              load_average_after=list(os.getloadavg()))
                runs.append(result)
                save()
    print(save())
    return 0


if __name__ == "__main__":
    sys.exit(main())
