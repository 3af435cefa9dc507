"""Shared test setup: Keras 2 before TensorFlow, the real-data location, seeds."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import tfcascade  # noqa: F401  (must come before any TensorFlow import)

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """The real datasets: $TFCASCADE_DATA_DIR, default ../shared/data beside the checkout."""
    return Path(os.environ.get("TFCASCADE_DATA_DIR", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture
def real_data_dir() -> Path:
    path = shared_data_dir()
    if not path.is_dir():
        pytest.skip(
            f"real data not found at {path}: set TFCASCADE_DATA_DIR to the folder holding "
            "topkgat/ (the shared data of the project) to run this test"
        )
    return path
