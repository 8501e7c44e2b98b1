# aftercall — two commands for a new user: `make demo` and `make test`. Both set themselves up.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
SAM_VENV := .venv-sam
BIN := $(VENV)/bin
SAM := $(SAM_VENV)/bin/sam
SAM_CLI_VERSION := 1.170.0
IAC_VENV := .venv-iac
CHECKOV_VERSION := 3.3.30
CFN_LINT_SERVERLESS_VERSION := 0.3.6
CFN_LINT_VERSION := 1.58.0
export SAM_CLI_TELEMETRY := 0
# sam validate --lint runs offline; it only needs a region to be named.
export AWS_DEFAULT_REGION ?= us-east-1

.PHONY: help setup demo test lint typecheck cfn-lint sam-validate iac-check pytest build bench clean

help:
	@echo "make demo   - run the whole pipeline locally (no AWS account, no Docker)"
	@echo "make test   - lint, type-check, validate and security-check the template, run every test"
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

# checkov pins its own dependencies (boto3 among them): it gets an environment of its own too,
# with the serverless cfn-lint rules.
$(IAC_VENV)/.installed:
	$(PYTHON) -m venv $(IAC_VENV)
	$(IAC_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(IAC_VENV)/bin/python -m pip install --quiet checkov==$(CHECKOV_VERSION) \
		cfn-lint-serverless==$(CFN_LINT_SERVERLESS_VERSION) cfn-lint==$(CFN_LINT_VERSION)
	@touch $@

setup: $(VENV)/.installed $(SAM_VENV)/.installed $(IAC_VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/aftercall demo

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(VENV)/.installed
	$(BIN)/mypy

cfn-lint: $(VENV)/.installed
	$(BIN)/cfn-lint template.yaml

sam-validate: $(SAM_VENV)/.installed
	$(SAM) validate --lint --template template.yaml

# Least privilege and encryption, offline: checkov's CloudFormation checks and the serverless rules.
# Every skip is justified next to it, in the resource's Metadata in template.yaml.
# checkov twice: on template.yaml (the SAM resources as written) and on the template as SAM
# transforms it, where the roles and function URLs SAM generates are (its IAM checks see them only there).
TRANSFORMED := .aws-sam/iac/template.transformed.json
iac-check: $(IAC_VENV)/.installed $(VENV)/.installed
	BC_SKIP_MAPPING=TRUE $(IAC_VENV)/bin/checkov -f template.yaml --framework cloudformation --quiet --compact \
		--skip-download
	$(BIN)/python -m aftercall_ops.emulator.template --transformed $(TRANSFORMED)
	BC_SKIP_MAPPING=TRUE $(IAC_VENV)/bin/checkov -f $(TRANSFORMED) --framework cloudformation --quiet --compact \
		--skip-download
	$(IAC_VENV)/bin/cfn-lint -t template.yaml -a cfn_lint_serverless.rules

pytest: $(VENV)/.installed
	$(BIN)/pytest -n 2 -q

test: lint typecheck cfn-lint sam-validate iac-check pytest

build: $(SAM_VENV)/.installed
	@command -v python3.13 >/dev/null || { echo "sam build needs python3.13 on PATH (try: PYENV_VERSION=3.13.0 make build)"; exit 2; }
	$(SAM) build --template template.yaml

bench: $(VENV)/.installed
	@for script in bench/[!_]*.py; do echo "== $$script"; $(BIN)/python $$script || exit 1; done  # bench/_*.py: helpers

clean:
	rm -rf $(VENV) $(SAM_VENV) $(IAC_VENV) .aws-sam .pytest_cache .mypy_cache .ruff_cache .local-stack
