"""JointRecallValidator: construction checks and the executor's artifacts (blessing wiring)."""

from __future__ import annotations

import json
import os

import pytest

pytest.importorskip("tfx")

from tfx.types import standard_artifacts  # noqa: E402

from tfcascade.components import blessing as bl  # noqa: E402
from tfcascade.components import cascade_evaluation  # noqa: E402
from tfcascade.components import joint_recall_validator as jrv  # noqa: E402


def _artifact(cls, uri, artifact_id):
    artifact = cls()
    artifact.uri = str(uri)
    artifact.id = artifact_id
    return artifact


def _run_executor(tmp_path, monkeypatch, joint_recall, threshold, baseline=None, tolerance=0.0,
                  cuts=(("k", 10), ("qs", "[30, 20]")), baselines=(), margin=0.0,
                  naive=(("random", 0.1), ("popularity", 0.3))):
    measured = {"k": 10, "qs": [30, 20], "slices": {},
                "overall": {"joint_recall": joint_recall, "num_requests": 5,
                            "stage_recall": [0.9, 0.8], "ndcg": [0.7, 0.6], "baselines": dict(naive)}}
    calls = []

    def fake_evaluate(**kwargs):
        calls.append(kwargs)
        return json.loads(json.dumps(measured))

    # The evaluation itself is tested in test_cascade_evaluation.py; here only the wiring.
    monkeypatch.setattr(cascade_evaluation, "evaluate_cascade", fake_evaluate)
    inputs = {
        "examples": [_artifact(standard_artifacts.Examples, tmp_path / "examples", 1)],
        "model": [_artifact(standard_artifacts.Model, tmp_path / "model", 7)],
    }
    if baseline is not None:
        old = _artifact(standard_artifacts.ModelBlessing, tmp_path / "old_blessing", 3)
        old.set_int_custom_property(bl.BLESSED_KEY, 1)
        old.set_float_custom_property(bl.JOINT_RECALL_KEY, baseline)
        inputs["baseline_blessing"] = [old]
        inputs["baseline_model"] = [_artifact(standard_artifacts.Model, tmp_path / "m0", 2)]
    outputs = {
        "evaluation": [_artifact(standard_artifacts.ModelEvaluation, tmp_path / "eval", 8)],
        "blessing": [_artifact(standard_artifacts.ModelBlessing, tmp_path / "blessing", 9)],
    }
    props = {"min_joint_recall": threshold, "tolerance": tolerance, **dict(cuts),
             "slice_features": '["age"]', "batch_size": 32, "baselines": json.dumps(list(baselines)),
             "margin": margin}
    jrv.JointRecallValidatorExecutor().Do(inputs, outputs, props)
    assert calls and calls[0]["slice_features"] == ["age"]
    assert (calls[0]["k"], calls[0]["qs"]) == ((10, [30, 20]) if cuts else (None, None))
    assert calls[0]["model_uri"] == str(tmp_path / "model")
    return outputs["blessing"][0], tmp_path


def test_blessed_model_gets_pusher_compatible_blessing(tmp_path, monkeypatch):
    from tfx.components.util import model_utils

    blessing, root = _run_executor(tmp_path, monkeypatch, joint_recall=0.8, threshold=0.5)
    assert model_utils.is_model_blessed(blessing)  # what the stock Pusher checks
    assert os.path.exists(root / "blessing" / bl.BLESSED_FILE_NAME)
    assert blessing.get_int_custom_property(bl.CURRENT_MODEL_ID_KEY) == 7
    assert blessing.get_float_custom_property(bl.JOINT_RECALL_KEY) == pytest.approx(0.8)
    metrics = json.loads((root / "eval" / jrv.METRICS_FILE).read_text())
    assert metrics["decision"]["blessed"] is True
    assert metrics["overall"]["joint_recall"] == pytest.approx(0.8)


def test_without_cuts_the_model_is_evaluated_at_its_own(tmp_path, monkeypatch):
    blessing, _ = _run_executor(tmp_path, monkeypatch, joint_recall=0.8, threshold=0.5, cuts=())
    assert blessing.get_int_custom_property(bl.BLESSED_KEY) == 1
    from tfx import v1 as tfx

    validator = jrv.JointRecallValidator(examples=tfx.dsl.Channel(type=standard_artifacts.Examples),
                                         model=tfx.dsl.Channel(type=standard_artifacts.Model), min_joint_recall=0.5)
    assert validator.exec_properties.get("k") is None and validator.exec_properties.get("qs") is None
    given = jrv.JointRecallValidator(examples=tfx.dsl.Channel(type=standard_artifacts.Examples),
                                     model=tfx.dsl.Channel(type=standard_artifacts.Model), min_joint_recall=0.5,
                                     k=5, qs=(25, 12))
    assert given.exec_properties["k"] == 5 and json.loads(given.exec_properties["qs"]) == [25, 12]


def test_below_threshold_is_not_blessed(tmp_path, monkeypatch):
    from tfx.components.util import model_utils

    blessing, root = _run_executor(tmp_path, monkeypatch, joint_recall=0.4, threshold=0.5)
    assert not model_utils.is_model_blessed(blessing)
    assert os.path.exists(root / "blessing" / bl.NOT_BLESSED_FILE_NAME)
    assert not os.path.exists(root / "blessing" / bl.BLESSED_FILE_NAME)


def test_regression_against_the_resolved_baseline_is_not_blessed(tmp_path, monkeypatch):
    blessing, root = _run_executor(tmp_path, monkeypatch, joint_recall=0.70, threshold=0.5,
                                   baseline=0.80, tolerance=0.05)
    assert blessing.get_int_custom_property(bl.BLESSED_KEY) == 0
    assert blessing.get_float_custom_property(bl.BASELINE_JOINT_RECALL_KEY) == pytest.approx(0.8)
    assert blessing.get_int_custom_property(bl.BASELINE_MODEL_ID_KEY) == 2
    reasons = json.loads((root / "eval" / jrv.METRICS_FILE).read_text())["decision"]["reasons"]
    assert len(reasons) == 1 and "latest blessed" in reasons[0]


def test_within_tolerance_of_baseline_is_blessed(tmp_path, monkeypatch):
    blessing, _ = _run_executor(tmp_path, monkeypatch, joint_recall=0.78, threshold=0.5,
                                baseline=0.80, tolerance=0.05)
    assert blessing.get_int_custom_property(bl.BLESSED_KEY) == 1


def test_the_naive_rankers_measured_on_the_eval_split_gate_the_blessing(tmp_path, monkeypatch):
    kwargs = dict(threshold=None, baselines=("random", "popularity"), margin=0.005)
    blessing, root = _run_executor(tmp_path / "a", monkeypatch, joint_recall=0.304, **kwargs)
    assert blessing.get_int_custom_property(bl.BLESSED_KEY) == 0
    assert blessing.get_float_custom_property("popularity_joint_recall") == pytest.approx(0.3)
    assert blessing.get_float_custom_property(bl.MARGIN_KEY) == pytest.approx(0.005)
    assert not blessing.has_custom_property(bl.MIN_JOINT_RECALL_KEY)
    decision = json.loads((root / "eval" / jrv.METRICS_FILE).read_text())["decision"]
    assert decision["naive_joint_recalls"] == {"random": 0.1, "popularity": 0.3}
    assert decision["reasons"] == [
        "joint recall 0.3040 does not beat the popularity ranker's 0.3000 by more than margin=0.0050"]
    blessing, _ = _run_executor(tmp_path / "b", monkeypatch, joint_recall=0.306, **kwargs)
    assert blessing.get_int_custom_property(bl.BLESSED_KEY) == 1
    # Only the named rankers count: against random alone 0.2 is enough.
    blessing, _ = _run_executor(tmp_path / "c", monkeypatch, joint_recall=0.2, threshold=None,
                                baselines=("random",), margin=0.005)
    assert blessing.get_int_custom_property(bl.BLESSED_KEY) == 1


def test_the_default_validator_beats_both_naive_rankers_with_no_absolute_bar():
    from tfx import v1 as tfx

    validator = jrv.JointRecallValidator(examples=tfx.dsl.Channel(type=standard_artifacts.Examples),
                                         model=tfx.dsl.Channel(type=standard_artifacts.Model))
    props = validator.exec_properties
    assert json.loads(props["baselines"]) == ["random", "popularity"]
    assert props["margin"] == jrv.DEFAULT_MARGIN and props.get("min_joint_recall") is None


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"baselines": ("random", "ctr")}, r"baselines must be among \['random', 'popularity'\], got baselines=\['random', 'ctr'\]"),
        ({"margin": 2.0}, "margin"),
        ({"min_joint_recall": 1.5}, "min_joint_recall"),
        ({"min_joint_recall": 0.5, "tolerance": -0.1}, "tolerance"),
        ({"min_joint_recall": 0.5, "k": 0}, "k"),
        ({"min_joint_recall": 0.5, "qs": (20, 30)}, "qs"),
        ({"min_joint_recall": 0.5, "k": 10, "qs": (30, 5)}, "qs"),
        ({"min_joint_recall": 0.5, "qs": (30, 0)}, "qs"),
        ({"min_joint_recall": 0.5, "batch_size": 0}, "batch_size"),
    ],
)
def test_bad_parameters_fail_when_the_pipeline_is_built(kwargs, match):
    from tfx import v1 as tfx

    examples = tfx.dsl.Channel(type=standard_artifacts.Examples)
    model = tfx.dsl.Channel(type=standard_artifacts.Model)
    with pytest.raises(ValueError, match=match):
        jrv.JointRecallValidator(examples=examples, model=model, **kwargs)
