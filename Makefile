# The one entry point: every workflow step and every README command is a target here.
# `make` alone lists the targets.

.DEFAULT_GOAL := help
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c

PYTHON ?= python3.11
# uv from PATH, else bootstrapped from PyPI into .tools/ (the version pinned here).
UV_VERSION := 0.13.9
UV ?= $(or $(shell command -v uv 2>/dev/null),$(CURDIR)/.tools/bin/uv)
VENV := $(CURDIR)/.venv
export PATH := $(VENV)/bin:$(PATH)
export DVC_NO_ANALYTICS := 1
PYTEST_ARGS ?=

.PHONY: help
## Show this help.
help:
	@awk '/^## /{doc=substr($$0,4)} /^[a-z][a-z-]*:/{if(doc){sub(":.*","",$$1); printf "  make %-10s %s\n",$$1,doc; doc=""}}' $(MAKEFILE_LIST)

$(CURDIR)/.tools/bin/uv:
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"

$(VENV)/.synced: pyproject.toml uv.lock | $(UV)
	$(UV) sync --locked
	touch $@

.PHONY: setup
## Install the locked environment (uv sync --locked) and the git hooks.
setup: $(VENV)/.synced
	@if [ -d .git ]; then pre-commit install --install-hooks >/dev/null; fi

.PHONY: data
## Pull the data (dvc pull data.dvc); seeds the bundled local remote on first use.
data: setup
	python -m gitml.data

.PHONY: run
## Install, pull the data and run the pipeline (dvc repro).
run: data
	dvc repro

.PHONY: lint
## Check formatting, lint, types, YAML and DVC status (pre-commit on all files; changes nothing).
lint: setup
	pre-commit run --all-files

.PHONY: format
## Rewrite files with the formatter and the linter's safe fixes.
format: setup
	ruff format src tests
	ruff check --fix src tests

.PHONY: test
## Install, pull the data, and run the whole suite: lint, unit and slow end-to-end tests.
test: data lint
	pytest $(PYTEST_ARGS)

.PHONY: test-fast
## Only the fast unit tests.
test-fast: setup
	pytest -m "not slow" $(PYTEST_ARGS)

.PHONY: bench
## Print pipeline timings: cold `make run` in a fresh clone, no-op `dvc repro`, training.
bench: setup
	python -m benchmarks.pipeline

.PHONY: clean
## Remove pipeline outputs and caches (keeps data and the environment).
clean:
	rm -rf artifacts/data/*.parquet artifacts/model .pytest_cache .ruff_cache .mypy_cache
	find . -name __pycache__ -not -path './.venv/*' -prune -exec rm -rf {} +
