"""The JointRecallValidator's blessing rule and its ML Metadata baseline look-up."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tfcascade.components import blessing as bl

mlmd_pb2 = pytest.importorskip("ml_metadata.proto.metadata_store_pb2")
metadata_store = pytest.importorskip("ml_metadata.metadata_store.metadata_store")


# ---- the rule ---------------------------------------------------------------------------------

def test_first_model_only_needs_the_threshold():
    assert bl.decide_blessing(0.80, 0.75).blessed
    decision = bl.decide_blessing(0.70, 0.75)
    assert not decision.blessed
    assert len(decision.reasons) == 1 and "min_joint_recall" in decision.reasons[0]


def test_threshold_is_inclusive():
    assert bl.decide_blessing(0.75, 0.75).blessed


def test_regression_beyond_tolerance_is_refused():
    decision = bl.decide_blessing(0.80, 0.5, baseline_joint_recall=0.85, tolerance=0.02)
    assert not decision.blessed
    assert "latest blessed" in decision.reasons[0]
    assert decision.baseline_joint_recall == 0.85


def test_regression_within_tolerance_is_blessed():
    assert bl.decide_blessing(0.84, 0.5, baseline_joint_recall=0.85, tolerance=0.02).blessed
    assert bl.decide_blessing(0.83, 0.5, baseline_joint_recall=0.85, tolerance=0.02).blessed


def test_both_bars_failed_gives_two_reasons():
    decision = bl.decide_blessing(0.30, 0.5, baseline_joint_recall=0.9, tolerance=0.0)
    assert not decision.blessed and len(decision.reasons) == 2


def test_naive_rankers_must_be_beaten_by_more_than_the_margin():
    naive = {"random": 0.10, "popularity": 0.2065}
    assert bl.decide_blessing(0.2144, naive_joint_recalls=naive, margin=0.005).blessed
    decision = bl.decide_blessing(0.2100, naive_joint_recalls=naive, margin=0.005)
    assert not decision.blessed
    assert decision.reasons == (
        "joint recall 0.2100 does not beat the popularity ranker's 0.2065 by more than margin=0.0050",)
    # "beat" is strict: a cascade that equals a naive ranker is not blessed, even with no margin.
    assert not bl.decide_blessing(0.10, naive_joint_recalls={"random": 0.10}).blessed
    assert decision.as_dict()["naive_joint_recalls"] == naive and decision.as_dict()["margin"] == 0.005


def test_no_absolute_bar_unless_asked():
    assert bl.decide_blessing(0.01).blessed
    assert bl.decide_blessing(0.01).min_joint_recall is None


@settings(max_examples=300, deadline=None)
@given(
    jr=st.floats(0, 1), thr=st.one_of(st.none(), st.floats(0, 1)), tol=st.floats(0, 1),
    base=st.one_of(st.none(), st.floats(0, 1)), margin=st.floats(0, 1),
    naive=st.dictionaries(st.sampled_from(["random", "popularity"]), st.floats(0, 1)),
)
def test_rule_matches_its_definition(jr, thr, tol, base, margin, naive):
    expected = ((thr is None or jr >= thr) and (base is None or jr >= base - tol)
                and all(jr > value + margin for value in naive.values()))
    decision = bl.decide_blessing(jr, thr, base, tol, naive_joint_recalls=naive, margin=margin)
    assert decision.blessed == expected
    assert decision.blessed == (not decision.reasons)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(joint_recall=1.5, min_joint_recall=0.5), "joint_recall"),
        (dict(joint_recall=math.nan, min_joint_recall=0.5), "joint_recall"),
        (dict(joint_recall=0.5, min_joint_recall=-0.1), "min_joint_recall"),
        (dict(joint_recall=0.5, min_joint_recall=0.5, tolerance=2.0), "tolerance"),
        (dict(joint_recall=0.5, min_joint_recall=0.5, baseline_joint_recall=math.inf),
         "baseline_joint_recall"),
        (dict(joint_recall=0.5, margin=-0.01), "margin"),
        (dict(joint_recall=0.5, naive_joint_recalls={"popularity": 1.2}),
         r"naive_joint_recalls\['popularity'\]"),
    ],
)
def test_bad_values_name_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        bl.decide_blessing(**kwargs)


def test_non_numbers_are_type_errors():
    with pytest.raises(TypeError, match="min_joint_recall"):
        bl.decide_blessing(0.5, "0.5")
    with pytest.raises(TypeError, match="joint_recall"):
        bl.decide_blessing(True, 0.5)


# ---- the baseline from ML Metadata -----------------------------------------------------------

def _store():
    config = mlmd_pb2.ConnectionConfig()
    config.fake_database.SetInParent()  # in-memory SQLite: a real store, nothing on disk
    return metadata_store.MetadataStore(config)


def _put_blessing(store, blessed, joint_recall=None, pipeline_context=None):
    type_id = store.put_artifact_type(mlmd_pb2.ArtifactType(name=bl.MODEL_BLESSING_TYPE))
    artifact = mlmd_pb2.Artifact(type_id=type_id, uri=f"/b/{blessed}/{joint_recall}")
    artifact.custom_properties[bl.BLESSED_KEY].int_value = int(blessed)
    if joint_recall is not None:
        artifact.custom_properties[bl.JOINT_RECALL_KEY].double_value = joint_recall
    [artifact_id] = store.put_artifacts([artifact])
    if pipeline_context is not None:
        attribution = mlmd_pb2.Attribution(artifact_id=artifact_id, context_id=pipeline_context)
        store.put_attributions_and_associations([attribution], [])
    return artifact_id


def _pipeline_context(store, name):
    type_id = store.put_context_type(mlmd_pb2.ContextType(name="pipeline"))
    [context_id] = store.put_contexts([mlmd_pb2.Context(type_id=type_id, name=name)])
    return context_id


def test_no_blessing_means_no_baseline():
    store = _store()
    assert bl.latest_blessed_joint_recall(store) is None
    _put_blessing(store, blessed=False, joint_recall=0.9)
    assert bl.latest_blessed_joint_recall(store) is None


def test_latest_blessed_wins_not_the_best_nor_an_unblessed_later_one():
    store = _store()
    _put_blessing(store, True, 0.90)
    _put_blessing(store, True, 0.81)
    _put_blessing(store, False, 0.95)  # newer but not blessed
    _put_blessing(store, True, None)   # blessed by something that recorded no joint recall
    assert bl.latest_blessed_joint_recall(store) == pytest.approx(0.81)


def test_pipeline_filter_uses_the_pipeline_context():
    store = _store()
    ours = _pipeline_context(store, "ours")
    _put_blessing(store, True, 0.70, pipeline_context=ours)
    _put_blessing(store, True, 0.99)  # another pipeline's (no context of ours)
    assert bl.latest_blessed_joint_recall(store, "ours") == pytest.approx(0.70)
    assert bl.latest_blessed_joint_recall(store) == pytest.approx(0.99)
    assert bl.latest_blessed_joint_recall(store, "unknown") is None


class _FakeStore:
    """Only the MetadataStore methods the look-up calls, over fixed protos."""

    def __init__(self, artifacts):
        self.artifacts = artifacts

    def get_artifacts_by_type(self, type_name):
        assert type_name == bl.MODEL_BLESSING_TYPE
        return list(self.artifacts)


def test_creation_time_orders_before_id():
    older = mlmd_pb2.Artifact(id=9, create_time_since_epoch=100)
    newer = mlmd_pb2.Artifact(id=3, create_time_since_epoch=200)
    for a, jr in ((older, 0.6), (newer, 0.7)):
        a.custom_properties[bl.BLESSED_KEY].int_value = 1
        a.custom_properties[bl.JOINT_RECALL_KEY].double_value = jr
    assert bl.latest_blessed_joint_recall(_FakeStore([older, newer])) == pytest.approx(0.7)


def test_tfx_artifacts_are_read_too():
    types = pytest.importorskip("tfx.types.standard_artifacts")
    blessing = types.ModelBlessing()
    blessing.set_int_custom_property(bl.BLESSED_KEY, 1)
    blessing.set_float_custom_property(bl.JOINT_RECALL_KEY, 0.42)
    assert bl.blessing_joint_recall(bl.latest_blessed([blessing])) == pytest.approx(0.42)
    assert bl.blessing_joint_recall(None) is None
