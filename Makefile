# RTRM developer tasks. GNU make; works from a fresh clone with Python 3.11+ and Node 20+.
#
#   make demo       set up, then run the whole system on a local devnet
#   make test       lint, types, import layers, tests (not the slow ones); what CI runs
#
# `setup` is idempotent: it creates .venv and installs the Python package only when
# pyproject.toml changed, and runs `npm ci` only when package-lock.json changed.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PY_STAMP := $(VENV)/.installed
NODE_STAMP := node_modules/.installed

SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-print-directory

# Never prompt, in CI or anywhere else.
export PIP_DISABLE_PIP_VERSION_CHECK := 1
export PIP_NO_INPUT := 1
export npm_config_update_notifier := false

.PHONY: help setup check-tools demo test test-all lint fmt contracts bench bench-seed bench-indexer bench-risk bench-decode clean distclean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

setup: $(PY_STAMP) $(NODE_STAMP)  ## create .venv and node_modules (only what changed)

# Checks the Python that will run RTRM (.venv's once it exists) and Node, with one
# message naming the problem and the fix.
check-tools:
	@py="$(PYTHON)"; [ -x "$(BIN)/python" ] && py="$(BIN)/python"; \
	if ! command -v "$$py" >/dev/null 2>&1; then \
	  echo "error: $$py not found; install Python 3.11+ or run make PYTHON=/path/to/python3.11" >&2; exit 1; fi; \
	if ! "$$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then \
	  echo "error: $$py is Python $$("$$py" -c 'import platform; print(platform.python_version())'), RTRM needs 3.11+;" \
	    "install it and run make PYTHON=python3.11 (or rm -rf $(VENV) if .venv is the old one)" >&2; exit 1; fi; \
	if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then \
	  echo "error: node and npm not found; install Node.js 20+ (https://nodejs.org), which includes npm" >&2; exit 1; fi; \
	if [ "$$(node -p 'process.versions.node.split(".")[0]')" -lt 20 ]; then \
	  echo "error: node is $$(node --version), RTRM needs Node.js 20+; install a newer one (https://nodejs.org)" >&2; exit 1; fi

$(BIN)/python: | check-tools
	$(PYTHON) -m venv $(VENV)

$(PY_STAMP): pyproject.toml setup.py indexer/_native.c | check-tools $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

# `npm ci` installs exactly the lock file (which lists anvil's package for every
# platform), and fails loudly when package.json and the lock disagree.
$(NODE_STAMP): package.json package-lock.json | check-tools
	npm ci --no-audit --no-fund
	@touch $@

demo: setup  ## run everything on a local devnet
	$(BIN)/rtrm demo

lint: setup  ## ruff, formatting, mypy, import layers
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

test: lint  ## lint, then the tests except the slow ones (what CI runs)
	$(BIN)/pytest -m "not slow"

test-all: lint  ## lint, then every test, slow ones included
	$(BIN)/pytest

fmt: setup  ## format and auto-fix
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

contracts: $(NODE_STAMP)  ## compile the Solidity contracts into contracts/build
	node contracts/compile.mjs

bench: bench-seed bench-indexer bench-risk bench-decode  ## every benchmark (tens of minutes)

bench-seed: setup  ## seed 100k users on 3 chains vs raw anvil throughput
	$(BIN)/python bench/seed.py

bench-indexer: setup  ## rtrm index into SQLite and PostgreSQL vs a raw getLogs client
	$(BIN)/python bench/indexer.py

bench-risk: setup  ## Greeks vs vollib, unified risk for 100k users, incremental update
	$(BIN)/python bench/risk.py

bench-decode: setup  ## log decoder vs eth_abi
	$(BIN)/python -m bench.decode

clean:  ## remove caches and build output (keeps .venv, node_modules and .rtrm)
	rm -rf .mypy_cache .ruff_cache .pytest_cache .hypothesis build dist *.egg-info
	find . -path ./$(VENV) -prune -o -path ./node_modules -prune -o \
	  -name __pycache__ -type d -exec rm -rf {} +

distclean: clean  ## also remove .venv and node_modules
	rm -rf $(VENV) node_modules
