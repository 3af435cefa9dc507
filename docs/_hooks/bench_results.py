"""MkDocs hook: serve bench/results/ as pages of the site, from the files themselves.

The benchmark scripts write their results to ``bench/results/*.md`` (with PNG plots beside them).
Documentation pages link to them as ``../bench/results/<name>.md`` -- the path that also works
when the Markdown is read on a code host -- and this hook adds those files to the build under
``bench/results/`` so that the links resolve and ``mkdocs build --strict`` checks them. Nothing is
copied into ``docs/``.
"""

from __future__ import annotations

from pathlib import Path

from mkdocs.structure.files import File, Files, InclusionLevel

RESULTS = "bench/results"


def on_files(files: Files, config) -> Files:
    docs_dir = Path(config.docs_dir)
    results = docs_dir.parent / RESULTS
    for path in sorted(results.glob("*")):
        if path.suffix not in (".md", ".png"):
            continue
        if path.suffix == ".md":
            dest = f"{RESULTS}/{path.stem}/index.html" if config.use_directory_urls else f"{RESULTS}/{path.stem}.html"
        else:
            dest = f"{RESULTS}/{path.name}"
        files.append(File(f"../{RESULTS}/{path.name}", str(docs_dir), config.site_dir, config.use_directory_urls,
                          dest_uri=dest, inclusion=InclusionLevel.NOT_IN_NAV))
    return files


def on_page_markdown(markdown: str, page, config, files) -> str:
    """A results file without a top-level title gets its path as the page title."""
    src = page.file.src_uri
    if src.startswith(f"../{RESULTS}/") and not any(line.startswith("# ") for line in markdown.splitlines()):
        return f"# {src[3:]}\n\n{markdown}"
    return markdown
