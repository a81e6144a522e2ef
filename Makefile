# Thingpress developer entry points. `make test` and `make demo` work from a fresh clone.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# The interpreter: PYTHON if set, else the first of python3.13, python3.12, python3 that runs and is 3.12
# or newer. scripts/find-python.sh resolves pyenv shims to the real interpreter (whatever PYENV_VERSION
# says) and otherwise stops with one line saying what Thingpress needs and what it found.
PYTHON ?=
FIND_PYTHON := scripts/find-python.sh
VENV := .venv
VENV_SAM := .venv-sam
PY := $(VENV)/bin/python
SAM := $(VENV_SAM)/bin/sam
PIP_FLAGS := --disable-pip-version-check --quiet
PYTEST_ARGS ?= -n 2 -p no:cacheprovider --durations=10
# The inner loop: pure functions (tests/unit) and template, IAM and docs checks (tests/template).
FAST_TESTS := tests/unit tests/template

.PHONY: help install-demo install install-sam lint typecheck validate build test test-fast demo bench deploy clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

# .venv in two layers: `make demo` needs only the runtime (the thingpress package and its pyproject
# dependencies, at the versions pinned in constraints.txt); `make install` adds the development tools.
# --no-compile: Python compiles what the CLI imports on first use, not all of matplotlib and moto now.
$(VENV)/.runtime: constraints.txt pyproject.toml
	@python=$$($(FIND_PYTHON) $(PYTHON)) || exit 1; \
	if [ -x $(PY) ] && ! $(FIND_PYTHON) $(PY) >/dev/null 2>&1; then rm -rf $(VENV); fi; \
	if [ ! -x $(PY) ]; then echo "Creating $(VENV) with $$python"; "$$python" -m venv $(VENV); fi
	$(PY) -m pip install $(PIP_FLAGS) -c constraints.txt setuptools
	$(PY) -m pip install $(PIP_FLAGS) --no-compile -c constraints.txt --no-build-isolation -e .
	touch $@

$(VENV)/.installed: $(VENV)/.runtime requirements-dev.txt constraints.txt
	$(PY) -m pip install $(PIP_FLAGS) -c constraints.txt -r requirements-dev.txt
	touch $@

$(VENV_SAM)/.installed: requirements-sam.txt constraints-sam.txt
	@python=$$($(FIND_PYTHON) $(PYTHON)) || exit 1; \
	if [ -x $(VENV_SAM)/bin/python ] && ! $(FIND_PYTHON) $(VENV_SAM)/bin/python >/dev/null 2>&1; then rm -rf $(VENV_SAM); fi; \
	if [ ! -x $(VENV_SAM)/bin/python ]; then echo "Creating $(VENV_SAM) with $$python"; "$$python" -m venv $(VENV_SAM); fi
	$(VENV_SAM)/bin/python -m pip install $(PIP_FLAGS) -c constraints-sam.txt -r requirements-sam.txt
	touch $@

install-demo: $(VENV)/.runtime ## Create .venv with the thingpress CLI and its runtime dependencies only
install: $(VENV)/.installed ## install-demo, plus the development tools (ruff, mypy, pytest, cfn-lint, bandit, stubs)
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

build: install-sam ## sam build (needs Python 3.13, the Lambda runtime; found like PYTHON, pyenv or not)
	@python=$$($(FIND_PYTHON) --min 3.13 --for "sam build" python3.13) || exit 1; \
	echo "PATH=$$(dirname $$python):\$$PATH $(SAM) build --template template.yaml"; \
	PATH="$$(dirname $$python):$$PATH" $(SAM) build --template template.yaml

test: install validate lint typecheck build ## Lint, type checks, template validation, sam build and every test
	$(PY) -m pytest $(PYTEST_ARGS) tests

test-fast: install ## The fast tests only: tests/unit and tests/template, no AWS emulation (under a minute)
	$(PY) -m pytest $(PYTEST_ARGS) $(FAST_TESTS)

demo: install-demo ## Run the whole pipeline on the embedded local AWS emulator
	$(VENV)/bin/thingpress demo

bench: install ## Benchmark: prints JSON figures and writes bench/results.json
	$(PY) bench/run.py

deploy: build ## sam deploy --guided, using samconfig.toml
	$(SAM) deploy --guided

clean: ## Remove virtualenvs, build output and caches
	rm -rf $(VENV) $(VENV_SAM) .aws-sam .mypy_cache .ruff_cache .pytest_cache bench/out
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
