# Primus-SaFE: `make up` runs the whole platform locally, `make test` runs what CI runs.
# Needs only python3 (>= 3.11); everything else is installed on demand.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DATA_DIR ?= ./data
UP_ARGS ?=
PYTEST_ARGS ?=
# Debian packages the tests start for real (sshd, registry); PostgreSQL too when no server is given.
TEST_PACKAGES := openssh-server docker-registry skopeo

.PHONY: help up test lint system-packages clean

help:
	@echo "make up    - run Primus-SaFE (Temporal, worker, API) with data in $(DATA_DIR)"
	@echo "make test  - lint and run the whole test suite"

# The virtualenv (pip is its sentinel: a failed venv leaves python without pip).
# Debian ships python3 without venv/ensurepip: install python3-venv when root.
$(BIN)/pip:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
		|| { echo "Python >= 3.11 is required ($(PYTHON) is $$($(PYTHON) -V 2>&1))"; exit 1; }
	@rm -rf $(VENV)
	@if ! $(PYTHON) -m venv $(VENV) >/dev/null 2>&1; then \
		rm -rf $(VENV); \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			ver=$$($(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])'); \
			apt-get update; \
			DEBIAN_FRONTEND=noninteractive apt-get install -y python3-venv "python$$ver-venv" \
				|| DEBIAN_FRONTEND=noninteractive apt-get install -y python3-venv; \
			$(PYTHON) -m venv $(VENV); \
		else \
			echo "'$(PYTHON) -m venv' failed: install python3-venv (sudo apt-get install python3-venv)"; \
			exit 1; \
		fi; \
	fi
	$(BIN)/python -m pip install --quiet --upgrade pip

# Re-install only when the dependencies change. The bytecode is compiled even where
# PYTHONDONTWRITEBYTECODE is set: Temporal's workflow sandbox imports the workflow modules afresh
# for every workflow instance, and compiling them from source each time doubles its cost.
PACKAGES := api activities db domain drivers primus_safe workflows
$(VENV)/.installed: pyproject.toml | $(BIN)/pip
	$(BIN)/pip install --quiet -e .
	$(BIN)/python -m compileall -q $(PACKAGES)
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/pip
	$(BIN)/pip install --quiet -e '.[test]'
	$(BIN)/python -m compileall -q $(PACKAGES)
	touch $@ $(VENV)/.installed

up: $(VENV)/.installed
	$(BIN)/primus-safe up --data-dir $(DATA_DIR) $(UP_ARGS)

# Install the missing test packages as root; otherwise say what is missing.
system-packages:
	@missing=""; \
	for pkg in $(TEST_PACKAGES); do \
		dpkg-query -W -f='$${Status}' "$$pkg" 2>/dev/null | grep -q "ok installed" || missing="$$missing $$pkg"; \
	done; \
	if [ -z "$${PRIMUS_TEST_POSTGRES_URL:-}" ] && ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then \
		missing="$$missing postgresql"; \
	fi; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			apt-get update; \
			DEBIAN_FRONTEND=noninteractive apt-get install -y $$missing; \
		else \
			echo "warning: missing packages:$$missing (as root: apt-get install$$missing)"; \
		fi; \
	fi

# lint-imports checks the layer rules (contracts in pyproject.toml, [tool.importlinter]).
lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache --no-logo

# pytest exits 5 when it collected nothing: that is a failure too (make stops on any non-zero).
test: $(VENV)/.installed-test system-packages lint
	$(BIN)/pytest $(PYTEST_ARGS) || { rc=$$?; [ $$rc -ne 5 ] || echo "pytest collected no tests"; exit $$rc; }

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
