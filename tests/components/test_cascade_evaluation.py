"""The validator's sliced metrics against a brute-force cascade simulation."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tfcascade.metrics")

from tfcascade.components.cascade_evaluation import plot_slices, sliced_metrics  # noqa: E402


def _brute_joint_recall(labels, stage_scores, mask, k, qs):
    """Per request: chain the stages' top-q cuts over the real items, overlap with true top-K."""
    recalls = []
    for b in range(labels.shape[0]):
        real = [i for i in range(labels.shape[1]) if mask[b, i] > 0]
        truth = set(sorted(real, key=lambda i: -labels[b, i])[:k])
        kept = real
        for scores, q in zip(stage_scores, qs, strict=True):
            kept = sorted(kept, key=lambda i, s=scores: -s[b, i])[:q]
        recalls.append(len(truth & set(kept)) / k)
    return float(np.mean(recalls))


def _data(seed, batch=12, n=40, k=4, pad=5):
    rng = np.random.default_rng(seed)
    # Distinct labels so the ground truth is unambiguous; padding at the end of each list.
    labels = np.stack([rng.permutation(n).astype(np.float32) for _ in range(batch)])
    mask = np.ones((batch, n), np.float32)
    mask[:, n - pad:] = 0
    labels[mask == 0] = -1
    stage_scores = [labels + rng.normal(scale=s, size=labels.shape) for s in (8.0, 4.0)]
    ages = rng.integers(1, 4, size=batch)
    return labels, stage_scores, mask, ages


@pytest.mark.parametrize("seed", [0, 1])
def test_overall_and_slices_match_brute_force(seed):
    labels, scores, mask, ages = _data(seed)
    k, qs = 4, (12, 6)
    result = sliced_metrics(labels, scores, mask, k, qs, slices={"age": ages},
                            value_names={"age": ["<unk>", "18-24", "25-34", "35+"]})
    assert result["overall"]["joint_recall"] == pytest.approx(
        _brute_joint_recall(labels, scores, mask, k, qs))
    assert result["overall"]["num_requests"] == labels.shape[0]
    names = {1: "18-24", 2: "25-34", 3: "35+"}
    total = 0
    for value in np.unique(ages):
        rows = ages == value
        got = result["slices"]["age"][names[int(value)]]
        total += got["num_requests"]
        assert got["num_requests"] == rows.sum()
        assert got["joint_recall"] == pytest.approx(_brute_joint_recall(
            labels[rows], [s[rows] for s in scores], mask[rows], k, qs))
        # Stage recall of one stage alone = a one-stage cascade.
        assert got["stage_recall"][0] == pytest.approx(_brute_joint_recall(
            labels[rows], [scores[0][rows]], mask[rows], k, qs[:1]))
    assert total == labels.shape[0]


def test_perfect_scores_give_perfect_metrics():
    labels, _, mask, _ = _data(3)
    result = sliced_metrics(labels, [labels, labels], mask, 4, (12, 6))
    assert result["overall"]["joint_recall"] == pytest.approx(1.0)
    assert result["overall"]["ndcg"] == pytest.approx([1.0, 1.0])


def test_shape_errors_name_the_input():
    labels, scores, mask, ages = _data(0)
    with pytest.raises(ValueError, match="qs"):
        sliced_metrics(labels, scores, mask, 4, (12,))
    with pytest.raises(ValueError, match=r"stage_scores\[1\]"):
        sliced_metrics(labels, [scores[0], scores[1][:, :3]], mask, 4, (12, 6))
    with pytest.raises(ValueError, match="age"):
        sliced_metrics(labels, scores, mask, 4, (12, 6), slices={"age": ages[:3]})


def test_plot_is_written(tmp_path):
    labels, scores, mask, ages = _data(0)
    result = sliced_metrics(labels, scores, mask, 4, (12, 6), slices={"age": ages})
    result["decision"] = {"min_joint_recall": 0.5}
    path = tmp_path / "plot.png"
    plot_slices(result, str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_trained_models_cuts_are_the_default(tiny_model_dir, tiny_data, tfx_layout):
    from tfcascade.components.cascade_evaluation import evaluate_cascade

    model_uri, examples = tfx_layout(tiny_model_dir, tiny_data)
    own = evaluate_cascade(model_uri=model_uri, examples_uri=examples, slice_features=("age",))
    assert (own["k"], own["qs"]) == (10, [30, 20])  # the model's spec
    other = evaluate_cascade(model_uri=model_uri, examples_uri=examples, slice_features=(), k=5,
                             qs=(25, 12))
    assert (other["k"], other["qs"]) == (5, [25, 12]) and other["overall"] != own["overall"]
    with pytest.raises(ValueError, match="k must be in 1..12"):
        evaluate_cascade(model_uri=model_uri, examples_uri=examples, slice_features=(), k=13, qs=(25, 12))


def test_popularity_scores_count_seen_items_and_give_zero_to_the_rest():
    from tfcascade.components.cascade_evaluation import popularity_scores

    counts = {"ids": np.array([2, 5, 9]), "counts": np.array([4, 1, 7])}
    got = popularity_scores(counts, np.array([[9, 1, 5, 2, 10, 0]]))
    np.testing.assert_array_equal(got, [[7, 0, 1, 4, 0, 0]])
    empty = {"ids": np.zeros(0, np.int64), "counts": np.zeros(0, np.int64)}
    np.testing.assert_array_equal(popularity_scores(empty, np.array([[3, 4]])), [[0, 0]])


def test_the_naive_rankers_are_scored_on_the_eval_requests(tiny_model_dir, tiny_data, tfx_layout):
    """Random: min(q_T, n) / n per request; popularity: logged counts of the train split, counted
    here independently, ranked with ties broken at random (expected value)."""
    import collections

    from tfcascade import data, metrics
    from tfcascade.components.cascade_evaluation import evaluate_cascade

    model_uri, examples = tfx_layout(tiny_model_dir, tiny_data)
    result = evaluate_cascade(model_uri=model_uri, examples_uri=examples, slice_features=("age",))
    counter = collections.Counter()
    for f in data.make_dataset(tiny_data, split="train", batch_size=64, shuffle=False):
        for vid, m in zip(f["video_id"].numpy().ravel(), f["mask"].numpy().ravel(), strict=True):
            counter[int(vid)] += int(m > 0)
    batches = list(data.make_dataset(tiny_data, split="eval", batch_size=64, shuffle=False))
    labels = np.concatenate([b["label"].numpy() for b in batches])
    mask = np.concatenate([b["mask"].numpy() for b in batches])
    vids = np.concatenate([b["video_id"].numpy() for b in batches])
    valid = ((labels >= 0) & (mask > 0)).sum(-1)
    q_t = result["qs"][-1]
    random = np.mean(np.minimum(q_t, valid[valid > 0]) / valid[valid > 0])
    popularity = metrics.expected_recall(labels, np.vectorize(counter.__getitem__)(vids).astype(float),
                                         result["k"], q_t, mask=mask)
    assert result["overall"]["baselines"] == pytest.approx({"random": random, "popularity": popularity})
    assert 0.0 < random < popularity  # logged counts carry signal on the simulator
    ages = result["slices"]["age"]
    assert sum(v["num_requests"] * v["baselines"]["random"] for v in ages.values()) == pytest.approx(
        random * labels.shape[0])
