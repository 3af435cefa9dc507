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


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """The `tiny` preset simulated and preprocessed with Beam (two stages), once per session."""
    from tfcascade.beam.preprocess import run_preprocess
    from tfcascade.data import simulate

    root = tmp_path_factory.mktemp("tiny")
    simulate(root / "recflow", "tiny", seed=0)
    run_preprocess(str(root / "recflow"), str(root / "data"), stages=2, eval_days=1)
    return root / "data"


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_data, tmp_path_factory) -> Path:
    """A two-stage DFTopK cascade trained for two epochs on ``tiny_data``."""
    from tfcascade.training import train

    model_dir = tmp_path_factory.mktemp("model")
    train(str(tiny_data), str(model_dir), loss="dftopk", epochs=2, batch_size=64, verbose=0)
    return model_dir


@pytest.fixture
def tfx_layout(tmp_path):
    """``lay(model_dir, data_dir) -> (model_uri, examples_uri)``: a trained model and a
    preprocessing laid out as the Trainer's model artifact and ExampleGen's examples."""
    import shutil

    from tfcascade.components.trainer_module import cascade_model_dir

    def lay(model_dir: Path, data_dir: Path) -> tuple[str, str]:
        model_uri, examples = tmp_path / "model", tmp_path / "examples"
        shutil.copytree(model_dir, cascade_model_dir(str(model_uri)))
        shutil.copytree(data_dir, examples)
        for split in ("train", "eval"):
            (examples / split).rename(examples / f"Split-{split}")
        return str(model_uri), str(examples)

    return lay


@pytest.fixture(scope="session")
def tiny_tarq_model_dir(tiny_data, tmp_path_factory) -> Path:
    """A two-stage DSSM → TARQ cascade (DFTopK loss, 3 steps, dead-code resets every 2) on ``tiny_data``."""
    from tfcascade.training import train

    model_dir = tmp_path_factory.mktemp("tarq_model")
    train(str(tiny_data), str(model_dir), loss="dftopk", batch_size=64, steps_per_epoch=3,
          stage_models=("dssm", "tarq"), codebook_reset_every=2, verbose=0)
    return model_dir
