# Thingpress developer entry points. `make test` and `make demo` work from a fresh clone.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# The Lambda runtime is Python 3.13; the pyenv shim needs PYENV_VERSION to expose python3.13.
export PYENV_VERSION ?= 3.13.0
PYTHON ?= $(shell command -v python3.13 2>/dev/null || command -v python3)
VENV := .venv
VENV_SAM := .venv-sam
PY := $(VENV)/bin/python
SAM := $(VENV_SAM)/bin/sam
PIP_FLAGS := --disable-pip-version-check --quiet
PYTEST_ARGS ?= -n 2 -p no:cacheprovider --durations=10
# The inner loop: pure functions (tests/unit) and template, IAM and docs checks (tests/template).
FAST_TESTS := tests/unit tests/template

.PHONY: help install install-sam lint typecheck validate build test test-fast demo bench deploy clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(VENV)/.installed: requirements-dev.txt constraints.txt src/layer_utils/requirements.txt src/manifest_provider/requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install $(PIP_FLAGS) -c constraints.txt -r requirements-dev.txt
	$(PY) -m pip install $(PIP_FLAGS) --no-deps --no-build-isolation -e .
	touch $@

$(VENV_SAM)/.installed: requirements-sam.txt constraints-sam.txt
	test -x $(VENV_SAM)/bin/python || $(PYTHON) -m venv $(VENV_SAM)
	$(VENV_SAM)/bin/python -m pip install $(PIP_FLAGS) -c constraints-sam.txt -r requirements-sam.txt
	touch $@

install: $(VENV)/.installed ## Create .venv with pinned dependencies and the thingpress CLI
install-sam: $(VENV_SAM)/.installed ## Create .venv-sam with the SAM CLI and checkov

lint: install ## ruff and bandit
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench
	$(VENV)/bin/bandit -q -r src

typecheck: install ## mypy --strict on src/
	$(VENV)/bin/mypy

validate: install install-sam ## sam validate --lint and cfn-lint
	$(SAM) validate --lint --template template.yaml --region us-east-1
	$(VENV)/bin/cfn-lint template.yaml
	$(VENV_SAM)/bin/checkov -f template.yaml

build: install-sam ## sam build (needs python3.13 on PATH)
	$(SAM) build --template template.yaml

test: install validate lint typecheck build ## Lint, type checks, template validation, sam build and every test
	$(PY) -m pytest $(PYTEST_ARGS) tests

test-fast: install ## The fast tests only: tests/unit and tests/template, no AWS emulation (under a minute)
	$(PY) -m pytest $(PYTEST_ARGS) $(FAST_TESTS)

demo: install ## Run the whole pipeline on the embedded local AWS emulator
	$(VENV)/bin/thingpress demo

bench: install ## Benchmark: prints JSON figures and writes bench/results.json
	$(PY) bench/run.py

deploy: build ## sam deploy --guided, using samconfig.toml
	$(SAM) deploy --guided

clean: ## Remove virtualenvs, build output and caches
	rm -rf $(VENV) $(VENV_SAM) .aws-sam .mypy_cache .ruff_cache .pytest_cache bench/out
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
