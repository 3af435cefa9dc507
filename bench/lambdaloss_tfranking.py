"""Cross-check of tfcascade's LambdaLoss against TF-Ranking, value and gradient.

    python bench/lambdaloss_tfranking.py --tfr-python /tmp/tfr_venv/bin/python [--out DIR]

(``python -m bench.lambdaloss_tfranking ...`` works too.) Run from the repository root with
the project's venv. tensorflow-ranking does not import on the project's TensorFlow, so it runs
in a venv of its own, e.g.::

    python3.11 -m venv /tmp/tfr_venv
    /tmp/tfr_venv/bin/pip install tensorflow==2.15.1 tensorflow-ranking==0.5.5

The script draws fixed test cases with numpy (graded labels with many ties, padding −1 at the
end of lists, tied scores), runs itself with ``--worker`` under ``--tfr-python`` to compute
``tfr.keras.losses.PairwiseLogisticLoss(reduction=SUM, lambda_weight=DCGLambdaWeight(topn,
gain = label, discount 1/ln(1 + r), normalized=True, smooth_fraction))`` and its gradient wrt
the scores, then compares with ``Σ_b lambdaloss(labels, scores, weights, topn, smooth_fraction,
idcg_topn=topn)[b]`` and ``lambda_pair_weights`` at (topn, smooth_fraction) = (20, 0) and
(30, 0.8). TF-Ranking is run three ways: as shipped in float32 (random tie order), in float32
with ties broken by index, and with its loss module's float32 casts turned into float64.
Writes ``lambdaloss_tfranking.md`` and ``lambdaloss_tfranking.json``. Not a CI test.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

SETTINGS = [(20, 0.0), (30, 0.8)]
SEED = 20261201
TOL_F64 = 1e-6  # relative, float64 against float64
TOL_F32 = 1e-5  # relative, anything against TF-Ranking's float32
VARIANTS = ("tfr_f64_index", "tfr_f32_index", "tfr_f32_stock")
REAL_LABELS = np.array(list(range(30, 20, -1)) + [7] * 10 + [6] * 10 + [5] * 10, dtype=np.float64)


# ---------------------------------------------------------------------------- test cases
def _f32(x: np.ndarray) -> np.ndarray:
    """Rounds to float32 and back, so that both sides see exactly the same inputs."""
    return np.asarray(x, np.float32).astype(np.float64)


def make_cases() -> dict[str, dict]:
    """``{name: {labels, scores, tied, note}}``, float64 ``[B, n]``; label −1 = padding."""
    rng = np.random.default_rng(SEED)
    cases: dict[str, dict] = {}

    def add(name, labels, scores, tied, note):
        cases[name] = {"labels": np.asarray(labels, np.float64), "scores": _f32(scores),
                       "tied": tied, "note": note}

    b = 6
    add("real_n40", np.tile(REAL_LABELS, (b, 1)), rng.normal(0, 1.5, (b, 40)), False,
        "labels 30..21, then 10×7, 10×6, 10×5, in that order")
    perm = np.argsort(rng.random((b, 40)), axis=1)
    add("real_n40_shuffled", REAL_LABELS[perm], rng.normal(0, 1.5, (b, 40)), False,
        "the same 40 labels, shuffled per list")
    labels = np.full((b, 50), -1.0)
    for row, m in enumerate([40, 38, 33, 25, 17, 9]):
        labels[row, :m] = rng.permutation(REAL_LABELS)[:m]
    add("real_n50_pad", labels, rng.normal(0, 1.5, (b, 50)), False,
        "n = 50, 40..9 of the real-like labels, padding −1 at the end")
    add("wide_scores_n40", REAL_LABELS[perm], rng.normal(0, 6.0, (b, 40)), False,
        "real-like labels, scores N(0, 6²) (saturated pairs)")

    b = 32
    labels = rng.integers(0, 5, (b, 8)).astype(np.float64)
    for row in range(0, b, 2):
        labels[row, 8 - rng.integers(1, 4):] = -1.0
    labels[1] = 2.0  # all labels equal: no ordered pair
    labels[3] = -1.0  # all padding
    labels[5, 1:] = -1.0  # one valid item
    add("small_int_n8", labels, rng.normal(0, 1.0, (b, 8)), False,
        "labels 0..4, padding −1 at the end of half the lists; one list of equal labels, "
        "one all padding, one with a single item")
    b = 8
    labels = rng.integers(0, 5, (b, 50)).astype(np.float64)
    for row, m in enumerate(rng.integers(5, 51, b)):
        labels[row, m:] = -1.0
    add("small_int_n50_pad", labels, rng.normal(0, 1.0, (b, 50)), False,
        "labels 0..4, 5..50 valid items, padding −1 at the end")

    b = 6
    add("tied_scores_n40", REAL_LABELS[perm], np.round(rng.normal(0, 1.0, (b, 40)) * 2) / 2, True,
        "real-like labels, scores on a 0.5 grid (many exact ties)")
    labels = rng.integers(0, 4, (16, 8)).astype(np.float64)
    labels[::3, 6:] = -1.0
    add("tied_scores_n8_pad", labels, rng.integers(0, 3, (16, 8)) / 2.0, True,
        "labels 0..3, padding at the end of every third list, scores in {0, 0.5, 1}")
    return cases


def _key(*parts) -> str:
    return "__".join(str(p) for p in parts)


# ---------------------------------------------------------------------------- TF-Ranking side
def worker(in_path: str, out_path: str) -> None:
    """Runs under the TF-Ranking venv: TF-Ranking's loss, gradient and pair weights per case."""
    import functools
    import importlib.metadata
    import types

    import tensorflow as tf
    import tensorflow_ranking as tfr
    from tensorflow_ranking.python import losses_impl, utils

    # TF-Ranking's loss module with its hard-coded float32 casts made float64 (nothing else
    # changed); sorting still casts the scores to float32, exact for these inputs.
    stock_source = Path(losses_impl.__file__).read_text()
    source = stock_source.replace("tf.float32", "tf.float64")
    impl64 = types.ModuleType("losses_impl_float64")
    impl64.__file__ = losses_impl.__file__
    exec(compile(source, losses_impl.__file__, "exec"), impl64.__dict__)

    stock_sorted_ranks = utils.sorted_ranks
    index_sorted_ranks = functools.partial(stock_sorted_ranks, shuffle_ties=False)

    def discount(r):
        return tf.math.divide_no_nan(tf.ones_like(r), tf.math.log1p(r))

    def make_loss(variant, topn, sf):
        impl = impl64 if variant == "tfr_f64_index" else losses_impl
        kwargs = dict(topn=topn, gain_fn=lambda label: label, rank_discount_fn=discount,
                      normalized=True, smooth_fraction=sf)
        if impl is losses_impl:
            lambda_weight = tfr.keras.losses.DCGLambdaWeight(**kwargs)
        else:
            lambda_weight = impl64.DCGLambdaWeight(**kwargs)
        loss = tfr.keras.losses.PairwiseLogisticLoss(
            reduction=tf.keras.losses.Reduction.SUM, lambda_weight=lambda_weight)
        if impl is impl64:
            loss._loss = impl64.PairwiseLogisticLoss(name=None, lambda_weight=lambda_weight)
        return loss

    data = np.load(in_path)
    names = json.loads(str(data["names"]))
    out = {}
    for variant in VARIANTS:
        utils.sorted_ranks = stock_sorted_ranks if variant == "tfr_f32_stock" else index_sorted_ranks
        dtype = tf.float64 if variant == "tfr_f64_index" else tf.float32
        for name in names:
            labels = tf.constant(data[_key(name, "labels")], dtype)
            for topn, sf in SETTINGS:
                loss = make_loss(variant, topn, sf)
                scores = tf.Variable(data[_key(name, "scores")], dtype=dtype)
                tf.random.set_seed(0)  # the stock variant's tie shuffle, reproducible
                with tf.GradientTape() as tape:
                    value = loss(labels, scores)
                grad = tape.gradient(value, scores)
                tf.random.set_seed(0)
                _, pair_w = loss._loss.compute_unreduced_loss(labels, scores)
                pair_w = pair_w * loss._loss.normalize_weights(labels, None)
                k = _key(variant, name, topn, sf)
                out[_key(k, "value")] = np.float64(value.numpy())
                out[_key(k, "grad")] = grad.numpy().astype(np.float64)
                out[_key(k, "pair_w")] = pair_w.numpy().astype(np.float64)
    info = {"python": platform.python_version(), "tensorflow": tf.__version__,
            "tensorflow_ranking": importlib.metadata.version("tensorflow-ranking"),
            "tensorflow_ranking.__version__": tfr.__version__, "numpy": np.__version__,
            "keras": importlib.metadata.version("keras"),
            "executable": sys.executable,
            "float32_casts_in_losses_impl": stock_source.count("tf.float32")}
    np.savez(out_path, info=json.dumps(info), **out)


def run_tfranking(tfr_python: str, cases: dict, work: Path) -> tuple[dict, dict]:
    in_path, out_path = work / "cases.npz", work / "tfranking.npz"
    arrays = {"names": json.dumps(list(cases))}
    for name, case in cases.items():
        arrays[_key(name, "labels")] = case["labels"]
        arrays[_key(name, "scores")] = case["scores"]
    np.savez(in_path, **arrays)
    env = {k: v for k, v in os.environ.items()
           if k not in ("TF_USE_LEGACY_KERAS", "PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env.update(TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([tfr_python, str(Path(__file__).resolve()), "--worker", str(in_path),
                           str(out_path)], cwd=work, env=env, capture_output=True, text=True,
                          check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"TF-Ranking worker failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    data = np.load(out_path)
    info = json.loads(str(data["info"]))
    return {k: data[k] for k in data.files if k != "info"}, info


# ---------------------------------------------------------------------------- our side
def run_ours(cases: dict) -> dict:
    import tensorflow as tf

    from tfcascade.losses.lambdaloss import lambda_pair_weights, lambdaloss

    out = {}
    for dtype, tag in ((tf.float64, "ours_f64"), (tf.float32, "ours_f32")):
        for name, case in cases.items():
            labels = tf.constant(case["labels"], dtype)
            weights = tf.cast(labels >= 0, dtype)
            for topn, sf in SETTINGS:
                scores = tf.Variable(case["scores"], dtype=dtype)
                with tf.GradientTape() as tape:
                    value = tf.reduce_sum(lambdaloss(labels, scores, weights, topn=topn,
                                                     smooth_fraction=sf, idcg_topn=topn))
                k = _key(tag, name, topn, sf)
                out[_key(k, "value")] = np.float64(value.numpy())
                out[_key(k, "grad")] = tape.gradient(value, scores).numpy().astype(np.float64)
                out[_key(k, "pair_w")] = lambda_pair_weights(
                    labels, scores, weights, topn=topn, smooth_fraction=sf,
                    idcg_topn=topn).numpy().astype(np.float64)
    return out


# ---------------------------------------------------------------------------- comparison
def _diff(a, b) -> dict:
    """Max abs difference and relative to max |b| (b the reference)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    abs_diff = float(np.max(np.abs(a - b))) if a.size else 0.0
    scale = float(np.max(np.abs(b))) if b.size else 0.0
    return {"abs": abs_diff, "rel": abs_diff / scale if scale > 0 else abs_diff}


def tied_pair_slope(scores: np.ndarray, pair_w: np.ndarray) -> np.ndarray:
    """The part of ∂/∂s of Σ w_ij log(1 + e^{−(s_i − s_j)}) that comes from pairs with s_i = s_j.

    Each such pair has slope ∓½·w_ij (i, j). TF-Ranking writes the pair loss as
    ``relu(−x) + log1p(exp(−|x|))``, whose TF gradient at x = 0 is 0, so its gradient lacks it.
    """
    tied = (scores[:, :, None] == scores[:, None, :]).astype(np.float64) * pair_w
    return -0.5 * tied.sum(axis=2) + 0.5 * tied.sum(axis=1)


def compare(cases: dict, ours: dict, tfr: dict) -> list[dict]:
    """One row per case × setting; ours is scaled by the list size n (TF-Ranking's factor)."""
    pairs = {"A": ("ours_f64", "tfr_f64_index", TOL_F64), "B": ("ours_f32", "tfr_f32_index", TOL_F32),
             "C": ("ours_f64", "tfr_f32_stock", TOL_F32)}
    rows = []
    for name, case in cases.items():
        n = case["labels"].shape[1]
        for topn, sf in SETTINGS:
            row = {"case": name, "batch": case["labels"].shape[0], "n": n, "topn": topn,
                   "smooth_fraction": sf, "tied_scores": case["tied"]}
            ours_v = ours[_key("ours_f64", name, topn, sf, "value")]
            ref_v = tfr[_key("tfr_f64_index", name, topn, sf, "value")]
            row["tfr_value"] = float(ref_v)
            row["ours_value"] = float(ours_v)
            row["tfr_over_ours"] = float(ref_v / ours_v) if ours_v != 0 else None
            row["unscaled"] = {"value": _diff(ours_v, ref_v), "grad": _diff(
                ours[_key("ours_f64", name, topn, sf, "grad")],
                tfr[_key("tfr_f64_index", name, topn, sf, "grad")])}
            for label, (mine, theirs, tol) in pairs.items():
                res = {}
                for what in ("value", "grad", "pair_w"):
                    res[what] = _diff(n * ours[_key(mine, name, topn, sf, what)],
                                      tfr[_key(theirs, name, topn, sf, what)])
                slope = tied_pair_slope(case["scores"], n * ours[_key(mine, name, topn, sf, "pair_w")])
                res["grad_without_tied_slope"] = _diff(
                    n * ours[_key(mine, name, topn, sf, "grad")] - slope,
                    tfr[_key(theirs, name, topn, sf, "grad")])
                res["tol"] = tol
                res["pass"] = all(res[w]["rel"] <= tol for w in ("value", "grad", "pair_w"))
                res["pass_without_tied_slope"] = all(
                    res[w]["rel"] <= tol for w in ("value", "grad_without_tied_slope", "pair_w"))
                row[label] = res
            rows.append(row)
    return rows


def _sci(x: float) -> str:
    return f"{x:.1e}"


def markdown(rows: list[dict], tfr_info: dict, ours_info: dict, cases: dict, command: str) -> str:
    from bench.common import markdown_table

    untied = [r for r in rows if not r["tied_scores"]]
    tied = [r for r in rows if r["tied_scores"]]
    ok = {x: all(r[x]["pass"] for r in untied) for x in "ABC"}
    ok_tied = {x: all(r[x]["pass_without_tied_slope"] for r in tied) for x in "AB"}
    tied_grad_differs = any(not r[x]["pass"] for r in tied for x in "AB")
    c_tied_value = max((r["C"]["value"]["rel"] for r in tied), default=0.0)
    ratios_ok = all(r["tfr_over_ours"] is None or abs(r["tfr_over_ours"] / r["n"] - 1) < 1e-9
                    for r in rows)
    unscaled_ok = all(r["unscaled"]["value"]["rel"] <= TOL_F64 for r in rows)

    def verdict(ok):
        return "**pass**" if ok else "**FAIL**"

    lines = [
        "# LambdaLoss vs TF-Ranking (`PairwiseLogisticLoss` + `DCGLambdaWeight`)",
        "",
        f"    {command}",
        "",
        "| side | Python | TensorFlow | tensorflow-ranking | numpy | Keras |",
        "|---|---|---|---|---|---|",
        f"| tfcascade (`lambdaloss`, `lambda_pair_weights`) | {ours_info['python']} | "
        f"{ours_info['tensorflow']} | — | {ours_info['numpy']} | tf-keras {ours_info['tf_keras']} |",
        f"| TF-Ranking venv | {tfr_info['python']} | {tfr_info['tensorflow']} | "
        f"{tfr_info['tensorflow_ranking']} (`__version__` {tfr_info['tensorflow_ranking.__version__']}) | "
        f"{tfr_info['numpy']} | keras {tfr_info['keras']} |",
        "",
        f"`tfcascade/losses/lambdaloss.py` as measured: sha256 {ours_info['lambdaloss_py_sha256']}….",
        "",
        "TF-Ranking: `tfr.keras.losses.PairwiseLogisticLoss(reduction=tf.keras.losses.Reduction.SUM, "
        "lambda_weight=tfr.keras.losses.DCGLambdaWeight(topn=topn, gain_fn=lambda l: l, "
        "rank_discount_fn=lambda r: tf.math.divide_no_nan(1, tf.math.log1p(r)), normalized=True, "
        "smooth_fraction=sf))`, no sample weight, gradient by `tf.GradientTape` wrt the scores. "
        "Ours: `Σ_b lambdaloss(labels, scores, weights=(labels >= 0), topn, sf, idcg_topn=topn)[b]`.",
        "",
        "## Verdict",
        "",
        f"* Unscaled, TF-Ranking's SUM loss equals Σ_b lambdaloss: {verdict(unscaled_ok)}. "
        + ("" if unscaled_ok else
           "TF-Ranking's loss is **n × ours**, n = the padded list size (`labels.shape[1]`, "
           "padding included): `AbstractDCGLambdaWeight.pair_weights` ends with "
           "`pair_weight *= tf.cast(tf.shape(labels)[1], tf.float32)` (\"a heuristic to scale it "
           "up to the same magnitude as standard pairwise loss\"). TF-Ranking / ours = n in every "
           f"case with pairs: {verdict(ratios_ok)}. All comparisons below multiply ours by n."),
        f"* A — ours float64 × n vs TF-Ranking's code in float64 (ties by index): value, "
        f"gradient and pair weights within {TOL_F64:g} relative on the cases without tied "
        f"scores: {verdict(ok['A'])}.",
        f"* B — ours float32 × n vs TF-Ranking as shipped, float32 (ties by index), within "
        f"{TOL_F32:g}, cases without tied scores: {verdict(ok['B'])}.",
        f"* C — ours float64 × n vs TF-Ranking exactly as shipped (float32, random tie order), "
        f"within {TOL_F32:g}, cases without tied scores: {verdict(ok['C'])}.",
        "* Tied scores (`tied_*` rows): values and pair weights agree as in A/B (ties by index), "
        + ("but the **gradients differ**: TF-Ranking writes the pair loss as "
           "`relu(−x) + log1p(exp(−|x|))` (`losses_impl.PairwiseLogisticLoss._pairwise_loss`), and "
           "TF's gradients of `relu` and `abs` at x = 0 are 0, so a pair with s_i = s_j contributes "
           "slope 0 in TF-Ranking instead of the true ∓½·w_ij (ours: `tf.nn.softplus`, slope "
           "−σ(0) = −½). With that slope taken out of ours (`tied_pair_slope`), value, pair "
           f"weights and gradient agree: A {verdict(ok_tied['A'])}, B {verdict(ok_tied['B'])} "
           "(columns marked †). Ours is the correct derivative; TF-Ranking's is a subgradient "
           "artefact at exact ties only."
           if tied_grad_differs else "and so do the gradients.")
        + " Against TF-Ranking as shipped (C) the tied rows differ in value too (up to "
        f"{c_tied_value:.1e} relative): it ranks tied scores in a random order "
        "(`utils.sorted_ranks` → `sort_by_scores(shuffle_ties=True)`, unseeded "
        "`tf.random.uniform`), ours by index, so there is nothing deterministic to match.",
        "",
        "Relative differences are max |Δ| / max |TF-Ranking| over the batch (value: the scalar; "
        "gradient: `[B, n]`; pair weights: `[B, n, n]`). TF-Ranking's loss code hard-codes "
        f"`tf.float32` casts ({tfr_info['float32_casts_in_losses_impl']} in `losses_impl.py`), so float64 inputs fail as shipped; "
        "variant A runs that same module with `tf.float32` replaced by `tf.float64` in its source "
        "(nothing else changed; `utils.sort_by_scores` still sorts a float32 copy of the scores, "
        "exact here since every score is a float32 value).",
        "",
        "## Results",
        "",
    ]
    headers = ["case", "B×n", "topn, sf", "TFR SUM loss", "TFR / ours", "A value", "A pair w",
               "A grad", "A grad †", "B value", "B pair w", "B grad", "B grad †", "C value",
               "C grad", "A/B/C", "A†/B†"]
    table = []
    for r in rows:
        ratio = r["tfr_over_ours"]
        table.append([
            r["case"], f"{r['batch']}×{r['n']}", f"{r['topn']}, {r['smooth_fraction']:g}",
            f"{r['tfr_value']:.6g}", "—" if ratio is None else f"{ratio:.12g}",
            *(_sci(r[x][w]["rel"]) for x in "AB"
              for w in ("value", "pair_w", "grad", "grad_without_tied_slope")),
            _sci(r["C"]["value"]["rel"]), _sci(r["C"]["grad"]["rel"]),
            "/".join("✓" if r[x]["pass"] else "✗" for x in "ABC"),
            "/".join("✓" if r[x]["pass_without_tied_slope"] else "✗" for x in "AB"),
        ])
    lines.append(markdown_table(headers, table))
    lines += [
        "",
        "† = ours minus the slope of tied-score pairs (see the verdict); equal to the plain "
        "column where no two valid scores of an ordered pair tie. Max absolute differences are "
        "in the JSON file. Cases (seed "
        f"{SEED}; scores are float32 values, stored as float64):",
        "",
    ]
    lines += [f"* `{name}` ({case['labels'].shape[0]}×{case['labels'].shape[1]}): {case['note']}."
              for name, case in cases.items()]
    lines += [
        "",
        "## TF-Ranking's conventions (read in its source, `tensorflow_ranking/python/`)",
        "",
        "* **Ranks** (`losses_impl._compute_ranks`): invalid entries (label < 0) get the score "
        "`min(logits over the whole list) − 1e-6`, then `utils.sorted_ranks(scores)` ranks 1-based "
        "by descending score via `sort_by_scores` → `tf.math.top_k` on a float32 copy. Its default "
        "`shuffle_ties=True` first permutes each list by `tf.random.uniform` (no seed), so **tied "
        "scores get a random order** on each call; with `shuffle_ties=False` `top_k` puts the lower "
        "index first, which is ours (`ranks_by_score`: stable descending argsort, valid first). "
        "Padding at the end of a list ranks after every valid item either way, unless the minimum "
        "valid score is so large in magnitude that `min − 1e-6` rounds back to it in float32 and "
        "the random shuffle puts a padding item first (not hit here).",
        "* **Pairs** (`_pairwise_comparison`): (i, j) with l_i > l_j, both valid; pairwise logit "
        "s_i − s_j; loss `relu(−x) + log1p(exp(−|x|))` = log(1 + e^{−x}), whose TF gradient is "
        "0 at x = 0 (true value −½); the weights get `tf.stop_gradient`.",
        "* **Pair weight** (`AbstractDCGLambdaWeight.pair_weights` and "
        "`DCGLambdaWeight._pair_rank_discount`): labels cleaned (invalid → 0), gain = gain_fn(label); "
        "`normalized=True` multiplies the gains by `inverse_max_dcg(labels, gain_fn, "
        "rank_discount_fn, topn)` = 1 / Σ_{r ≤ min(topn, n)} gain(ideal label at r) · D(r) over the "
        "cleaned labels sorted descending (0 when that DCG is 0), i.e. the ideal DCG over the first "
        "topn ranks, padding counted as gain 0. Then w_ij = |G_i − G_j|/IDCG · ((1 − f)·u + f·v) · "
        "[r_i ≤ topn or r_j ≤ topn] · n, with u = |D(|r_i − r_j|) − D(|r_i − r_j| + 1)| (0 when "
        "r_i = r_j), v = |D(r_i)·[r_i ≤ topn] − D(r_j)·[r_j ≤ topn]|, and **n = `tf.shape(labels)[1]`**, "
        "the padded list size.",
        "* **Reduction** (keras `_PairwiseLoss.call` and `_RankingLoss.__call__`): the [B, n, n] "
        "weighted pair losses are summed over j; the sample weight `normalize_weights(labels, None)` "
        "= [label_i ≥ 0] is applied per i; `Reduction.SUM` sums over B and i. So the SUM loss is "
        "Σ_b Σ_ij w_ij · log(1 + e^{−(s_i − s_j)}) with w as above (per list, no division by the "
        "number of pairs: that is `compute_per_list`, not used by the keras loss).",
        "* Compared with ours the differences are the factor n and the zero slope of exactly tied "
        "pairs; gain, discount, u/v and their topn masks, IDCG cut-off (`idcg_topn=topn`), "
        "padding, and ranks with ties by index agree to float64 rounding (variant A).",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tfr-python", help="python of a venv with tensorflow-ranking")
    parser.add_argument("--out", type=Path, default=None, help="results folder (bench/results)")
    parser.add_argument("--worker", nargs=2, metavar=("IN", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(*args.worker)
        return 0
    if not args.tfr_python:
        parser.error("--tfr-python is required")

    root = str(Path(__file__).resolve().parent.parent)
    if root not in sys.path:  # run as a script rather than with -m
        sys.path.insert(0, root)
    import tfcascade  # noqa: F401, I001  (before tensorflow: it sets TF_USE_LEGACY_KERAS)
    import tensorflow as tf
    import tf_keras

    import tfcascade.losses.lambdaloss as lambdaloss_module
    from bench.common import RESULTS_DIR, write_results

    cases = make_cases()
    with tempfile.TemporaryDirectory(prefix="lambdaloss_tfr_") as tmp:
        tfr, tfr_info = run_tfranking(args.tfr_python, cases, Path(tmp))
    ours = run_ours(cases)
    rows = compare(cases, ours, tfr)
    ours_info = {"python": platform.python_version(), "tensorflow": tf.__version__,
                 "tf_keras": tf_keras.__version__, "numpy": np.__version__,
                 "lambdaloss_py_sha256": hashlib.sha256(
                     Path(lambdaloss_module.__file__).read_bytes()).hexdigest()[:16]}
    command = f"python bench/lambdaloss_tfranking.py --tfr-python {args.tfr_python}"
    if args.out:
        command += f" --out {args.out}"
    md = markdown(rows, tfr_info, ours_info, cases, command)
    payload = {"settings": SETTINGS, "seed": SEED, "tolerance": {"f64": TOL_F64, "f32": TOL_F32},
               "tfranking": tfr_info, "tfcascade_side": ours_info,
               "comparisons": {"A": "ours float64 x n vs TF-Ranking loss code in float64, ties by index",
                               "B": "ours float32 x n vs TF-Ranking float32 as shipped, ties by index",
                               "C": "ours float64 x n vs TF-Ranking float32 as shipped, random ties"},
               "cases": {k: {"shape": list(v["labels"].shape), "tied_scores": v["tied"],
                             "note": v["note"]} for k, v in cases.items()},
               "rows": rows}
    json_path, md_path = write_results("lambdaloss_tfranking", payload, md,
                                       args.out or RESULTS_DIR)
    print(md)
    print(f"\nwrote {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
