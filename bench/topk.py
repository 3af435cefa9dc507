"""Operator benchmark: forward and forward+backward time of the differentiable top-K ops.

    python -m bench.topk [--quick] [--out DIR]

Side by side in one run: DFTopK (plain ``tf.function`` and ``jit_compile=True``), LapSum,
NeuralSort, SoftSort, the successive-halving tournament, TF's hard ``tf.math.top_k`` (forward
only) and the PyTorch peer — the DFTopK formula written with two ``torch.kthvalue`` calls,
as the reference implementation does. Also approximation quality (L1 distance to the hard
mask, |Σ − k|, nCCS of the tournament) and the goals of the operator issue, pass/fail.
Writes ``topk.md``, ``topk.json`` and ``topk_time_vs_n.png``.
"""

# tfcascade is imported before TensorFlow so TF_USE_LEGACY_KERAS is set first.
from __future__ import annotations  # noqa: I001

import argparse
import os
import time
from pathlib import Path

import tfcascade  # noqa: F401
import tensorflow as tf

from bench.common import RESULTS_DIR, markdown_table, time_call, write_results
from tfcascade.ops.dftopk import dftopk
from tfcascade.ops.hard_topk import hard_topk_mask
from tfcascade.ops.lapsum import lapsum_topk
from tfcascade.ops.soft_permutation import neural_sort, soft_sort, topq_membership
from tfcascade.ops.tournament import iterative_softmax_topk, ncc_similarity, tournament_topk

FULL_SHAPES = [(1024, 4096, 2048), (1024, 4096, 10), (16, 32768, 16384), (1, 262144, 131072),
               (1, 16384, 8192), (1024, 40, 10), (1024, 200, 10)]
QUICK_SHAPES = [(64, 256, 128), (256, 40, 10), (1, 16384, 8192)]
SCALING_N = [1024, 4096, 16384, 65536, 262144]
MEMORY_LIMIT = 4 * 2**30  # skip ops whose working set would exceed ~4 GB
SORT_LIMIT = {"full": MEMORY_LIMIT, "quick": 64 * 2**20}  # --quick also skips O(n²) sorts over 64 MB
_mode = "full"
TOURNAMENT_DIM = 32


def _tf_runner(fn, x, backward: bool, jit: bool):
    w = tf.random.stateless_normal(x.shape, seed=[7, 7])

    def fwd(a):
        return fn(a)

    def fwd_bwd(a):
        with tf.GradientTape() as tape:
            tape.watch(a)
            y = tf.reduce_sum(tf.cast(fn(a), tf.float32) * w)
        return tape.gradient(y, a)

    compiled = tf.function(fwd_bwd if backward else fwd, jit_compile=jit)
    return lambda: compiled(x).numpy()


def _torch_runner(x_np, k, tau, backward: bool):
    import torch

    x = torch.tensor(x_np, requires_grad=backward)
    w = torch.randn(x.shape)

    def run():
        # The reference's two order statistics via kthvalue on −x (k-th largest of x).
        a = torch.kthvalue(-x, k, dim=-1, keepdim=True).values
        b = torch.kthvalue(-x, k + 1, dim=-1, keepdim=True).values
        f = torch.sigmoid((x + (a + b) / 2) / tau)
        if backward:
            x.grad = None
            (f * w).sum().backward()
        return f

    return run


def _ops(k: int):
    return {
        "dftopk": lambda a: dftopk(a, k),
        "lapsum": lambda a: lapsum_topk(a, k),
        "neural_sort": lambda a: topq_membership(neural_sort(a, 1.0), k),
        "soft_sort": lambda a: topq_membership(soft_sort(a, 1.0), k),
    }


def _fits(op: str, b: int, n: int) -> bool:
    if op in ("neural_sort", "soft_sort"):
        return b * n * n * 4 * 6 <= SORT_LIMIT[_mode]
    if op == "tournament":
        return b * n * TOURNAMENT_DIM * 4 * 8 <= MEMORY_LIMIT
    return True


ALL_OPS = ("dftopk", "lapsum", "neural_sort", "soft_sort", "tournament")


def time_shape(b: int, n: int, k: int, repeats: int, torch_ok: bool, max_seconds: float,
               ops=ALL_OPS) -> dict:
    x = tf.random.stateless_normal([b, n], seed=[b, n])
    row: dict = {"shape": f"{b}×{n}/{k}", "B": b, "n": n, "k": k}
    row["tf.math.top_k fwd"] = time_call(lambda: tf.math.top_k(x, k).values.numpy(), repeats, 1, max_seconds)["median_ms"]
    for name, fn in _ops(k).items():
        if name not in ops:
            continue
        if not _fits(name, b, n):
            row[f"{name} skipped"] = f"O(n²) memory > {SORT_LIMIT[_mode] / 2**30:g} GB"
            continue
        # --quick: every variant for DFTopK, only graph fwd+bwd for the others (compile time).
        variants = [(j, bw) for j in (False, True) for bw in (False, True)]
        if _mode == "quick" and name != "dftopk":
            variants = [(False, True)]
        for jit, backward in variants:
            tag = "xla" if jit else "graph"
            key = f"{name} {tag} {'fwd+bwd' if backward else 'fwd'}"
            try:
                row[key] = time_call(_tf_runner(fn, x, backward, jit), repeats, 1, max_seconds)["median_ms"]
            except (tf.errors.ResourceExhaustedError, tf.errors.InvalidArgumentError) as err:
                row[key] = None
                row[f"{key} error"] = str(err).splitlines()[0][:120]
    if "tournament" in ops and _fits("tournament", b, n):
        e = tf.random.stateless_normal([b, n, TOURNAMENT_DIM], seed=[1, n])
        tour = tf.function(lambda a, v: tournament_topk(a, v, k))
        row["tournament graph fwd"] = time_call(lambda: tour(e, x)[0].numpy(), repeats, 1, max_seconds)["median_ms"]
    if torch_ok:
        import torch

        torch.set_num_threads(tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count())
        x_np = x.numpy()
        row["torch kthvalue-DFTopK fwd"] = time_call(_torch_runner(x_np, k, 1.0, False), repeats, 1, max_seconds)["median_ms"]
        row["torch kthvalue-DFTopK fwd+bwd"] = time_call(_torch_runner(x_np, k, 1.0, True), repeats, 1, max_seconds)["median_ms"]
    return row


def best(row: dict, op: str, mode: str = "fwd+bwd") -> float | None:
    values = [row.get(f"{op} {tag} {mode}") for tag in ("graph", "xla")]
    values = [v for v in values if v is not None]
    return min(values) if values else None


def quality(b: int = 256, n: int = 200, k: int = 10) -> list[dict]:
    """L1 distance to the hard top-k mask and |Σ − k| per row, scores ~ N(0, 1)."""
    x = tf.random.stateless_normal([b, n], seed=[3, 3])
    hard = hard_topk_mask(x, k)
    rows = []
    for name, fn, temps in (("dftopk", lambda t: dftopk(x, k, t), (0.01, 0.1, 1.0)),
                            ("lapsum", lambda t: lapsum_topk(x, k, t), (0.01, 0.1, 1.0)),
                            ("neural_sort", lambda t: topq_membership(neural_sort(x, t), k), (0.01, 0.1, 1.0)),
                            ("soft_sort", lambda t: topq_membership(soft_sort(x, t), k), (0.01, 0.1, 1.0))):
        for t in temps:
            p = fn(t)
            rows.append({"op": name, "temperature": t,
                         "L1 to hard mask": float(tf.reduce_mean(tf.reduce_sum(tf.abs(p - hard), -1))),
                         "|Σ − k|": float(tf.reduce_mean(tf.abs(tf.reduce_sum(p, -1) - k)))})
    return rows


def tournament_quality(configs, batch: int = 16, d: int = TOURNAMENT_DIM) -> list[dict]:
    """nCCS and time: successive halving vs Goyal et al.'s iterative softmax (arXiv 2010.15552)."""
    rows = []
    for n, k in configs:
        e = tf.random.stateless_normal([batch, n, d], seed=[n, k])
        v = tf.random.stateless_normal([batch, n], seed=[k, n])
        for name, fn in (("successive halving", tournament_topk), ("iterative softmax", iterative_softmax_topk)):
            f = tf.function(lambda a, b, fn=fn, k=k: fn(a, b, k))
            start = time.perf_counter()
            out = f(e, v)[0]
            timing = time_call(lambda f=f, e=e, v=v: f(e, v)[0].numpy(), 3, 1, 20.0)
            rows.append({"n→k": f"{n}→{k}", "method": name, "nCCS": float(tf.reduce_mean(ncc_similarity(out, e, v, k))),
                         "seconds": timing["median_ms"] / 1e3, "first call s": time.perf_counter() - start})
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small shapes, seconds (used by make demo)")
    parser.add_argument("--out", default=str(RESULTS_DIR))
    parser.add_argument("--repeats", type=int, default=50, help="timed calls per measurement (capped by --max-seconds)")
    parser.add_argument("--shapes", nargs="+", metavar="B,n,k",
                        help="override the shapes, e.g. --shapes 1024,4096,2048 16,32768,16384")
    parser.add_argument("--max-seconds", type=float, default=20.0, help="per measurement")
    parser.add_argument("--ops", nargs="+", choices=ALL_OPS, default=list(ALL_OPS),
                        help="which soft operators to time (tf.math.top_k and the PyTorch peer always run)")
    args = parser.parse_args(argv)
    global _mode
    _mode = "quick" if args.quick else "full"
    try:
        import torch  # noqa: F401

        torch_ok = True
    except ImportError:
        torch_ok = False
    shapes = QUICK_SHAPES if args.quick else FULL_SHAPES
    if args.shapes:
        try:
            shapes = [tuple(int(v) for v in s.split(",")) for s in args.shapes]
        except ValueError:
            parser.error(f"--shapes takes B,n,k triples, got --shapes {' '.join(args.shapes)}")
        if any(len(s) != 3 or min(s) <= 0 or s[2] >= s[1] for s in shapes):
            parser.error(f"--shapes needs positive B,n,k with k < n, got {args.shapes}")
    repeats = 3 if args.quick else args.repeats
    if args.quick:
        args.max_seconds = min(args.max_seconds, 2.0)
    rows = []
    for b, n, k in shapes:
        print(f"timing B={b} n={n} k={k} ...", flush=True)
        rows.append(time_shape(b, n, k, repeats, torch_ok, args.max_seconds, args.ops))
    scaling = []
    for n in (SCALING_N[:2] if args.quick else SCALING_N):
        print(f"scaling n={n} ...", flush=True)
        scaling.append(time_shape(1, n, n // 2, repeats, torch_ok, args.max_seconds, args.ops))
    qual = quality()
    tour = [] if "tournament" not in args.ops else tournament_quality(
        [(256, 16)] if args.quick else [(8192, 512), (16384, 2048), (2048, 8), (200, 10)])
    goals = check_goals(rows, scaling)
    name = "topk_quick" if args.quick else "topk"
    payload = {"rows": rows, "scaling": scaling, "quality": qual, "tournament": tour, "goals": goals,
               "torch_threads": _torch_threads() if torch_ok else None}
    md = render(rows, scaling, qual, tour, goals, torch_ok) + f"\n\n![time vs n]({name}_time_vs_n.png)"
    out = Path(args.out)
    write_results(name, payload, md, out)
    plot(scaling, out / f"{name}_time_vs_n.png")
    print(md)
    return 0


def _torch_threads():
    import torch

    return torch.get_num_threads()


def check_goals(rows, scaling) -> list[dict]:
    goals = []
    for row in rows:
        peer = row.get("torch kthvalue-DFTopK fwd+bwd")
        ours = best(row, "dftopk")
        if peer and ours:
            goals.append({"goal": f"DFTopK fwd+bwd ≤ PyTorch peer at {row['shape']}", "value": ours / peer,
                          "target": "≤ 1.0", "pass": ours / peer <= 1.0})
    for row in rows:
        if (row["B"], row["n"], row["k"]) in ((1024, 4096, 2048), (16, 32768, 16384)):
            ours, lap = best(row, "dftopk"), best(row, "lapsum")
            if ours and lap:
                goals.append({"goal": f"LapSum / DFTopK ≥ 3 at {row['shape']}", "value": lap / ours,
                              "target": "≥ 3", "pass": lap / ours >= 3})
    by_n = {r["n"]: best(r, "dftopk") for r in scaling}
    if 262144 in by_n and 16384 in by_n:
        ratio = by_n[262144] / by_n[16384]
        goals.append({"goal": "t(n=262144)/t(n=16384) at B=1 (linear: 16)", "value": ratio, "target": "≤ 20",
                      "pass": ratio <= 20})
    return goals


def render(rows, scaling, qual, tour, goals, torch_ok) -> str:
    cols = ["tf.math.top_k fwd", "dftopk graph fwd", "dftopk xla fwd", "dftopk graph fwd+bwd", "dftopk xla fwd+bwd",
            "torch kthvalue-DFTopK fwd", "torch kthvalue-DFTopK fwd+bwd", "lapsum graph fwd+bwd", "lapsum xla fwd+bwd",
            "neural_sort graph fwd+bwd", "soft_sort graph fwd+bwd", "tournament graph fwd"]
    parts = ["## Time (median ms; B×n/k)", "",
             markdown_table(["shape", *cols], [[r["shape"], *[r.get(c) for c in cols]] for r in rows]), ""]
    skipped = sorted({f"{k.split(' ')[0]} at {r['shape']}" for r in rows for k in r if k.endswith("skipped")})
    if skipped:
        parts += [f"Skipped (O(n²) memory over {SORT_LIMIT[_mode] / 2**30:g} GB): {', '.join(skipped)}.", ""]
    if not torch_ok:
        parts += ["PyTorch is not installed: the peer columns are empty (`pip install torch==2.13.0`).", ""]
    parts += ["## Scaling in n (B=1, k=n/2, fwd+bwd, best of graph/XLA, ms)", "",
              markdown_table(["n", "dftopk", "lapsum", "torch kthvalue-DFTopK"],
                             [[r["n"], best(r, "dftopk"), best(r, "lapsum"), r.get("torch kthvalue-DFTopK fwd+bwd")]
                              for r in scaling]), "",
              "## Approximation quality (B=256, n=200, k=10, scores ~ N(0, 1))", "",
              markdown_table(["op", "temperature", "L1 to hard mask", "|Σ − k|"],
                             [[q["op"], q["temperature"], q["L1 to hard mask"], q["|Σ − k|"]] for q in qual]), "",
              "## Tournament (batch 16, d=32): nCCS to the true top-k and time", "",
              markdown_table(["n→k", "method", "nCCS", "seconds"],
                             [[t["n→k"], t["method"], t["nCCS"], t["seconds"]] for t in tour]), "",
              "## Goals", "",
              markdown_table(["goal", "value", "target", "pass"],
                             [[g["goal"], g["value"], g["target"], "yes" if g["pass"] else "NO"] for g in goals])]
    return "\n".join(parts)


def plot(scaling, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ns = [r["n"] for r in scaling]
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, values in (("DFTopK (ours)", [best(r, "dftopk") for r in scaling]),
                          ("LapSum (ours)", [best(r, "lapsum") for r in scaling]),
                          ("PyTorch kthvalue-DFTopK", [r.get("torch kthvalue-DFTopK fwd+bwd") for r in scaling])):
        pts = [(n, v) for n, v in zip(ns, values) if v]
        if pts:
            ax.loglog(*zip(*pts), marker="o", label=label)
    ax.set_xlabel("list length n (B=1, k=n/2)")
    ax.set_ylabel("forward+backward, median ms")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
