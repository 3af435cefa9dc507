"""Package-level behaviour: the CLI lists its commands; the README is a short front door (its links
and the documentation site: test_docs.py; import order: test_import_order.py)."""

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


def _code_blocks(text: str) -> list[list[str]]:
    """The fenced code blocks of a markdown text, each as its lines."""
    blocks, block = [], None
    for line in text.splitlines():
        if line.startswith("```"):
            if block is None:
                block = []
            else:
                blocks.append(block)
                block = None
        elif block is not None:
            block.append(line)
    return blocks


def test_readme_is_a_short_front_door():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines; the rest belongs in docs/"
    assert lines[0].startswith("# tfcascade")


def test_readme_starts_with_the_two_commands():
    first = _code_blocks((ROOT / "README.md").read_text())[0]
    assert [line.split()[:2] for line in first] == [["make", "demo"], ["make", "test"]], first
    assert all("#" in line for line in first), "each command says what it does"


def test_readme_pastes_no_benchmark_tables():
    text = (ROOT / "README.md").read_text()
    for name in sorted(p.name for p in (ROOT / "bench" / "results").glob("*.md")):
        body = [line for line in (ROOT / "bench" / "results" / name).read_text().splitlines()
                if line.startswith("| ") and "---" not in line]
        pasted = [line for line in body if line in text]
        assert not pasted, f"README.md pastes rows of bench/results/{name}: {pasted[:2]}"
