"""Package-level behaviour: the CLI lists its commands, the README (import order: test_import_order.py)."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _python(code: str, env_extra=None):
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=300)


def test_cli_lists_its_commands():
    out = _python("from tfcascade.cli.main import main; main(['--help'])")
    for command in ("simulate", "preprocess", "train", "evaluate", "compare", "export", "pipeline", "topkgat"):
        assert command in out.stdout, out.stdout + out.stderr[-2000:]


def test_readme_is_built_from_docs():
    out = subprocess.run([sys.executable, "scripts/build_readme.py", "--check"], cwd=ROOT, capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stdout
    text = (ROOT / "README.md").read_text()
    first = text.splitlines()[:6]
    assert first[3].startswith("make demo ") and first[4].startswith("make test ")
