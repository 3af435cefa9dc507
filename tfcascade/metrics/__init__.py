"""Cascade metrics: the golden Joint Recall@K@q_T, per-stage Recall@K@q and NDCG@K."""

from tfcascade.metrics.functions import (
    expected_recall,
    gauc,
    ground_truth,
    joint_recall,
    ndcg,
    stage_recall,
)
from tfcascade.metrics.streaming import NDCG, JointRecall, StageRecall

__all__ = ["NDCG", "JointRecall", "StageRecall", "expected_recall", "gauc", "ground_truth", "joint_recall", "ndcg", "stage_recall"]
