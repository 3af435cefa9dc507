"""The README's Python examples run as written (the cascade one on the tiny preset's data)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BLOCKS = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
README_DATA = "/tmp/x/data"  # the folder the README's shell lines preprocess into


def test_the_readme_has_the_layer_and_the_cascade_example():
    assert len(BLOCKS) == 2
    assert "DFTopK" in BLOCKS[0] and "build_cascade" in BLOCKS[1] and README_DATA in BLOCKS[1]


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(index, tiny_data, tmp_path):
    code = BLOCKS[index].replace(README_DATA, str(tiny_data))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("TF_USE_LEGACY_KERAS", None)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
