"""Training with m in-batch sampled negatives, m ∈ {0, 40, 160}: joint recall and step time per loss.

    python -m bench.negatives_sweep [--results bench/results] [--m 0 40 160] [--draw slots]
                                    [--rounds 30] [--work DIR]

Reads the two-stage tables that ``bench.cascade`` wrote for each m (m = 0: ``cascade.json``, else
``cascade_partial.json``; m > 0: ``cascade_neg<m>_<draw>[_partial].json``; ``_items`` is not in
the name of the default draw), refuses files that were not measured in the same setting (preset,
epochs, batch, Adam ε, and for m > 0 the negative draw), and writes
``negatives_sweep.md/.json/.png``:

1. per loss and m, Joint Recall@10@20 (mean ± std over the seeds each file has) under the three
   protocols of ``bench.cascade``: the logged items only, + 160 of the day's distinct items, and
   + 160 drawn over the other requests' slots (the DFTopK code's draw);
2. per loss and m, the median time of one full two-stage train step (DSSM → DIN forward, loss,
   backward, Adam) at batch 64 on real requests whose lists are tiled to 40 + m items, measured
   here in interleaved rounds (each round times one step of every loss and m, so a change in the
   machine's load falls on all of them alike; the training runs' own step times depend on what
   else ran).

The DFTopK paper (arXiv 2510.11472) claims the best joint recall at every sampling size and the
cheapest step as the lists grow; the Markdown says for each m which loss leads.
"""

# ruff: noqa: I001  (tfcascade is imported before tensorflow: it sets TF_USE_LEGACY_KERAS)
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

import tfcascade  # noqa: F401

from bench.cascade import LOGGED_ITEMS, model_train_step, negatives_tag, prepare
from bench.common import RESULTS_DIR, markdown_table, write_results
from tfcascade.data.negatives import DRAWS

SETTING = ("preset", "epochs", "batch_size", "adam_epsilon")
PROTOCOLS = {"logged": "logged items only (LCRON's protocol)", "distinct": "+ 160 of the day's distinct items",
             "slots": "+ 160 slots of other requests (DFTopK's draw)"}


def result_file(results: Path, m: int, draw: str) -> Path:
    """The ``bench.cascade`` result for ``m`` negatives: the full file if there is one, else the partial."""
    stem = f"cascade{negatives_tag(m, draw)}"
    for name in (f"{stem}.json", f"{stem}_partial.json"):
        if (results / name).exists():
            return results / name
    raise FileNotFoundError(f"--m {m}: neither {stem}.json nor {stem}_partial.json in {results}; "
                            f"run python -m bench.cascade --stages 2 --sampled-negatives {m} --negative-draw {draw}")


def load_tables(results: Path, ms: list[int], draw: str) -> dict:
    """``{m: payload}`` of the two-stage results, all measured in one setting."""
    tables = {}
    for m in ms:
        path = result_file(results, m, draw)
        payload = json.loads(path.read_text())
        if "2stage" not in payload:
            raise ValueError(f"{path.name} has no two-stage table")
        if payload.get("sampled_negatives", 0) != m:
            raise ValueError(f"{path.name} was trained with {payload.get('sampled_negatives')} negatives, not {m}")
        if m and payload.get("negative_draw") != draw:
            raise ValueError(f"{path.name} drew its negatives by {payload.get('negative_draw')!r}, not {draw!r}")
        tables[m] = payload
    first = tables[ms[0]]
    for m, payload in tables.items():
        differ = {key: (first.get(key), payload.get(key)) for key in SETTING if payload.get(key) != first.get(key)}
        if differ:
            raise ValueError(f"m = {m} and m = {ms[0]} were not measured in the same setting: {differ}")
    return tables


def sweep_rows(tables: dict) -> dict:
    """``{loss: {m: {"logged" | "distinct" | "slots": summary, "seeds": n}}}`` for the losses every m has."""
    losses = set.intersection(*(set(p["2stage"]) for p in tables.values()))
    return {name: {m: {"logged": p["2stage_logged_only"][name], "distinct": p["2stage"][name]["joint_recall"],
                       "slots": p["2stage_slot_negatives"][name],
                       "seeds": len(p["2stage"][name]["joint_recall"].get("runs", []))}
                   for m, p in tables.items()}
            for name in sorted(losses)}


def interleaved_step_ms(data: Path, names: list[str], ms: list[int], batch: int, rounds: int) -> dict:
    """``{loss: {m: median ms}}`` of one train step, over ``rounds`` rounds that each step every
    (loss, m) once."""
    steps = {(name, m): model_train_step(data, name, LOGGED_ITEMS[2] + m, batch) for name in names for m in ms}
    times: dict = {key: [] for key in steps}
    for _ in range(rounds):
        for key, step in steps.items():
            start = time.perf_counter()
            step()
            times[key].append(1e3 * (time.perf_counter() - start))
    return {name: {m: float(np.median(times[(name, m)])) for m in ms} for name in names}


def leaders(rows: dict, ms: list[int], key: str) -> dict:
    return {m: max(rows, key=lambda n: rows[n][m][key]["mean"]) for m in ms}


def plot(rows: dict, steps: dict, ms: list[int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(17, 3.8))
    for name in rows:
        for ax, key in zip(axes[:3], PROTOCOLS):
            ax.errorbar(ms, [rows[name][m][key]["mean"] for m in ms], yerr=[rows[name][m][key]["std"] for m in ms],
                        marker="o", capsize=2, label=name)
        axes[3].plot(ms, [steps[name][m] for m in ms], marker="o", label=name)
    for ax, title in zip(axes, (*(f"Joint Recall@10@20, {title}" for title in PROTOCOLS.values()),
                                "train step (ms, batch 64, 40 + m items)")):
        ax.set_xlabel("m in-batch negatives in training")
        ax.set_xticks(ms)
        ax.set_title(title, fontsize=9)
    axes[3].set_yscale("log")
    axes[3].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default=str(RESULTS_DIR), help="where bench.cascade wrote its files")
    parser.add_argument("--m", type=int, nargs="+", default=[0, 40, 160])
    parser.add_argument("--draw", default="slots", choices=DRAWS,
                        help="how the training negatives were drawn (tfcascade.data.negatives)")
    parser.add_argument("--rounds", type=int, default=30, help="timed train steps per loss and m, interleaved")
    parser.add_argument("--work", default=None, help="folder for the simulated data (default: a temp folder)")
    parser.add_argument("--out", default=str(RESULTS_DIR))
    args = parser.parse_args(argv)
    ms = sorted(set(args.m))
    if ms[0] < 0:
        parser.error(f"--m must be ≥ 0, got {ms[0]}")
    if args.rounds < 1:
        parser.error(f"--rounds must be ≥ 1, got {args.rounds}")
    results, out = Path(args.results), Path(args.out)
    try:
        tables = load_tables(results, ms, args.draw)
    except (FileNotFoundError, ValueError) as err:
        parser.error(str(err))
    rows = sweep_rows(tables)
    first = tables[ms[0]]
    data = prepare(first["preset"], 2, Path(args.work or tempfile.mkdtemp(prefix="tfcascade-sweep-")))
    steps = interleaved_step_ms(data, list(rows), ms, first["batch_size"], args.rounds)
    payload = {"m": ms, "negative_draw": args.draw, **{key: first[key] for key in SETTING},
               "sources": {m: result_file(results, m, args.draw).name for m in ms},
               "losses": {name: {str(m): {**rows[name][m], "train_step_ms": steps[name][m]} for m in ms}
                          for name in rows}}
    order = sorted(rows, key=lambda n: -rows[n][ms[0]]["logged"]["mean"])
    seeds = ", ".join(f"m = {m}: {max(r[m]['seeds'] for r in rows.values())}" for m in ms)

    def cell(s: dict) -> str:
        return f"{s['mean']:.3f} ± {s['std']:.3f}"

    parts = [f"Two stages, {first['preset']} preset, batch {first['batch_size']} × {first['epochs']} passes, "
             f"Adam ε {first['adam_epsilon']:g}; training negatives drawn by {args.draw!r}; seeds per loss: {seeds}. "
             f"Sources: {', '.join(payload['sources'].values())}.", ""]
    for key, title in PROTOCOLS.items():
        lead = leaders(rows, ms, key)
        parts += [f"## Joint Recall@10@20, {title}", "",
                  markdown_table(["loss", *(f"m = {m}" for m in ms)],
                                 [[name, *(cell(rows[name][m][key]) for m in ms)] for name in order]), "",
                  "Best: " + "; ".join(f"m = {m}: {lead[m]}" for m in ms) + ".", ""]
    cheapest = {m: min(rows, key=lambda n: steps[n][m]) for m in ms}
    parts += [f"## Train step, median ms (batch {first['batch_size']}, 40 + m items, median of {args.rounds} interleaved rounds)", "",
              markdown_table(["loss", *(f"m = {m}" for m in ms), f"m = {ms[-1]} / m = {ms[0]}"],
                             [[name, *(f"{steps[name][m]:.1f}" for m in ms), f"{steps[name][ms[-1]] / steps[name][ms[0]]:.2f}"]
                              for name in order]), "",
              "Cheapest: " + "; ".join(f"m = {m}: {cheapest[m]}" for m in ms) + ".", "",
              "![joint recall and step time against m](negatives_sweep.png)", ""]
    plot(rows, steps, ms, out / "negatives_sweep.png")
    md = "\n".join(parts)
    write_results("negatives_sweep", payload, md, out)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
