# aftercall — two commands for a new user: `make demo` and `make test`. Both set themselves up.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
SAM_VENV := .venv-sam
BIN := $(VENV)/bin
SAM := $(SAM_VENV)/bin/sam
SAM_CLI_VERSION := 1.170.0
export SAM_CLI_TELEMETRY := 0
# sam validate --lint runs offline; it only needs a region to be named.
export AWS_DEFAULT_REGION ?= us-east-1

.PHONY: help setup demo test lint typecheck cfn-lint sam-validate pytest build bench clean

help:
	@echo "make demo   - run the whole pipeline locally (no AWS account, no Docker)"
	@echo "make test   - lint, type-check, validate the template, run every test"
	@echo "make build  - sam build (needs a python3.13 on PATH, e.g. PYENV_VERSION=3.13.0)"
	@echo "make bench  - run the benchmarks in bench/"

# The dev environment: runtime + operator tools + test tools, from pyproject.toml.
$(VENV)/.installed: pyproject.toml layers/aftercall/requirements.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "aftercall needs Python 3.11 or newer")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

# aws-sam-cli pins its own boto3, so it lives in an environment of its own.
$(SAM_VENV)/.installed:
	$(PYTHON) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(SAM_VENV)/bin/python -m pip install --quiet aws-sam-cli==$(SAM_CLI_VERSION)
	@touch $@

setup: $(VENV)/.installed $(SAM_VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/python -m aftercall_ops.demo

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(VENV)/.installed
	$(BIN)/mypy

cfn-lint: $(VENV)/.installed
	$(BIN)/cfn-lint template.yaml

sam-validate: $(SAM_VENV)/.installed
	$(SAM) validate --lint --template template.yaml

pytest: $(VENV)/.installed
	$(BIN)/pytest -n 2 -q

test: lint typecheck cfn-lint sam-validate pytest

build: $(SAM_VENV)/.installed
	@command -v python3.13 >/dev/null || { echo "sam build needs python3.13 on PATH (try: PYENV_VERSION=3.13.0 make build)"; exit 2; }
	$(SAM) build --template template.yaml

bench: $(VENV)/.installed
	@for script in bench/*.py; do echo "== $$script"; $(BIN)/python $$script || exit 1; done

clean:
	rm -rf $(VENV) $(SAM_VENV) .aws-sam .pytest_cache .mypy_cache .ruff_cache .local-stack
