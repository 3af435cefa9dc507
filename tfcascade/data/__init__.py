"""Cascade logs: RecFlow schema and reader, the RecFlow-shaped simulator, tf.data inputs.

The Beam preprocessing lives in ``tfcascade.beam.preprocess`` (``run_preprocess``); this package
never imports Beam.
"""

from tfcascade.data.negatives import append_sampled_negatives
from tfcascade.data.recflow import list_days, read_requests
from tfcascade.data.simulator import PRESETS, SimulatorConfig, simulate
from tfcascade.data.tfdata import (
           dataset_from_records,
           load_metadata,
           load_vocabularies,
           make_dataset,
)

__all__ = ["PRESETS", "SimulatorConfig", "append_sampled_negatives", "dataset_from_records", "list_days", "load_metadata",
           "load_vocabularies", "make_dataset", "read_requests", "simulate"]
