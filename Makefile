# tfcascade — the two commands a fresh machine needs: `make demo` and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.tfcascade-installed
DEMO_DIR ?= demo_out
PYTEST_ARGS ?=

.PHONY: setup test test-fast lint docs demo bench clean

$(STAMP): pyproject.toml scripts/setup_venv.sh constraints/known-good.txt
	bash scripts/setup_venv.sh $(VENV)
	touch $(STAMP)

setup: $(STAMP)

lint: setup
	$(PY) -m ruff check .

# The documentation site (docs/ + the API reference from the docstrings) into site/; --strict:
# any warning (a broken link or anchor, a page missing from the nav, a docstring griffe cannot
# parse) fails the build.
DOCS_BUILD = NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict -d site
docs: setup
	$(DOCS_BUILD)

# The whole suite (what CI runs): lint, the strict docs build, every test (slow end-to-end ones included).
test: setup
	$(PY) -m ruff check .
	$(DOCS_BUILD)
	$(PY) -m pytest $(PYTEST_ARGS)

# Skips the slow end-to-end tests (TFX pipeline, multi-epoch training).
test-fast: setup
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

# simulate logs -> Beam preprocessing -> TFX pipeline (train, validate joint recall, push SavedModel)
demo: setup
	bash scripts/demo.sh $(DEMO_DIR)

bench: setup
	$(PY) -m bench.topk
	$(PY) -m bench.cascade

clean:
	rm -rf $(VENV) $(DEMO_DIR) site .pytest_cache .ruff_cache
