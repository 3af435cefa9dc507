# tfcascade — the two commands a fresh machine needs: `make demo` and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.tfcascade-installed
DEMO_DIR ?= demo_out
PYTEST_ARGS ?=

.PHONY: setup test test-fast lint demo bench clean

$(STAMP): pyproject.toml scripts/setup_venv.sh constraints/known-good.txt
	bash scripts/setup_venv.sh $(VENV)
	touch $(STAMP)

setup: $(STAMP)

lint: setup
	$(PY) -m ruff check .

# The whole suite (what CI runs), slow end-to-end tests included.
test: setup
	$(PY) -m ruff check .
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
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache .ruff_cache
