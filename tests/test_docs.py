"""The README and the documentation site's sources (docs/): relative links point to files that
exist, and nothing points outside the repository. The site itself is built with
``mkdocs build --strict`` by ``make docs`` / ``make test``, which also checks anchors, the nav and
the docstrings of the API reference."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
# Files outside the repository that earlier documentation pointed to.
OUTSIDE = ("REFERENCES.md", "../shared")


def _prose(text: str) -> str:
    """The text without fenced code blocks and inline code (links there are not links)."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
    return re.sub(r"`[^`\n]*`", "", text)


def _relative_links(page: Path) -> list[str]:
    targets = LINK.findall(_prose(page.read_text()))
    return [t for t in targets if not re.match(r"^[a-z][a-z0-9+.-]*:", t) and not t.startswith("#")]


def test_the_pages_have_links():
    assert len(PAGES) > 10
    assert _relative_links(ROOT / "README.md"), "README.md links the documentation pages"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_point_to_existing_files(page):
    missing = []
    for target in _relative_links(page):
        path = target.split("#", 1)[0].split("?", 1)[0]
        if path and not (page.parent / path).resolve().exists():
            missing.append(target)
    assert not missing, f"{page.relative_to(ROOT)} links to missing files: {missing}"


def test_link_parser_sees_links():
    assert LINK.findall('see [losses](losses.md#x), ![plot](a.png "t") and [site](https://x.org)') == [
        "losses.md#x", "a.png", "https://x.org"]
    assert _relative_links(ROOT / "docs" / "index.md")


def _mentions_outside(paths) -> list[str]:
    hits = []
    for path in paths:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if any(word in line for word in OUTSIDE):
                hits.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    return hits


def test_docs_point_nowhere_outside_the_repository():
    assert not _mentions_outside([*PAGES, ROOT / "mkdocs.yml"])


def test_docstrings_point_nowhere_outside_the_repository():
    assert not _mentions_outside(sorted((ROOT / "tfcascade").rglob("*.py")))
