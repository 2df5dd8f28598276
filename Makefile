# Fotostudio Appliance: `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PATH := $(CURDIR)/.tools/bin:$(PATH)

.DEFAULT_GOAL := help
.PHONY: help up test test-fast test-e2e test-embedded lint format tools tools-test bench clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "Python 3.11 or newer is needed"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $@

tools: ## Install restic 0.18 into .tools/bin
	bash scripts/install-tools.sh

tools-test: ## Install restic and the test tools (Chromium, shellcheck, Compose, Ansible)
	bash scripts/install-tools.sh --test

up: $(STAMP) tools ## Run the whole appliance here (embedded PostgreSQL; Ctrl-C stops it)
	$(BIN)/appliance up

lint: $(STAMP) ## ruff (lint and format check), mypy, shellcheck
	$(BIN)/ruff check appliance tests
	$(BIN)/ruff format --check appliance tests
	$(BIN)/mypy
	@if command -v shellcheck >/dev/null; then shellcheck -x scripts/*.sh .ci/run installer/*.sh; \
	 else echo "shellcheck not installed (make tools-test installs it); shell scripts not checked"; fi

format: $(STAMP) ## Format the code with ruff
	$(BIN)/ruff format appliance tests
	$(BIN)/ruff check --fix appliance tests

test-fast: $(STAMP) ## Unit, packaging and integration tests only
	$(BIN)/pytest tests/unit tests/packaging tests/integration tests/faults

test-e2e: $(STAMP) tools-test ## Browser tests in their own pytest process
	$(BIN)/pytest tests/e2e

test-embedded: $(STAMP) ## Integration tests against the embedded PostgreSQL (as with no server)
	APPLIANCE_TEST_POSTGRES=embedded $(BIN)/pytest tests/integration -q

test: $(STAMP) tools-test lint ## Everything CI runs: lint, all tests, and again on embedded PG
	$(BIN)/pytest tests/unit tests/packaging tests/integration tests/faults
	$(BIN)/pytest tests/e2e
# Again on the embedded server: the tests that use a database (tests/conftest.py picks them).
	APPLIANCE_TEST_POSTGRES=embedded $(BIN)/pytest tests/integration -q

bench: $(STAMP) ## Benchmarks (print ratios against an in-process baseline)
	$(BIN)/pytest tests/benchmarks -s

clean: ## Remove the virtual environment, tools and caches (never the data folder)
	rm -rf $(VENV) .tools .pytest_cache .mypy_cache .ruff_cache
