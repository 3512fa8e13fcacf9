# Each target sets up what it needs from a fresh clone, in one .venv: `make serve` installs
# only what serving needs; `make test` adds the test, cluster and notebook extras (Ray, so the cluster
# tests run too). What CI adds it asks for with variables, never with another command:
#   RNNSCOPE_REQUIRE_TORCH=1    installs torch==2.13.0 (the parity tests then fail, not skip,
#                               without it; the exact pin is the CPU wheel on this machine's disk)
#   RNNSCOPE_REQUIRE_BROWSER=1  installs Debian's chromium if it is missing (needs root)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip install --quiet --disable-pip-version-check
SERVE_STAMP := $(VENV)/.serve-stamp
TEST_STAMP := $(VENV)/.test-stamp
TORCH_STAMP := $(VENV)/.torch-stamp

.PHONY: install serve test bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(SERVE_STAMP): pyproject.toml | $(BIN)/python
	$(PIP) -e .
	touch $@

$(TEST_STAMP): pyproject.toml | $(BIN)/python
	$(PIP) -e '.[test,cluster,notebook]'
	touch $@ $(SERVE_STAMP)

$(TORCH_STAMP): | $(BIN)/python
	$(PIP) torch==2.13.0
	touch $@

# What the environment asks the tests to require, installed before they run.
TEST_NEEDS := $(TEST_STAMP)
ifeq ($(RNNSCOPE_REQUIRE_TORCH),1)
TEST_NEEDS += $(TORCH_STAMP)
endif

install: $(TEST_STAMP)

# Settings come from RNNSCOPE_* variables, given either way: make serve RNNSCOPE_PORT=8001
# or RNNSCOPE_PORT=8001 make serve (make exports both to the command).
serve: $(SERVE_STAMP)
	$(BIN)/rnnscope serve

test: $(TEST_NEEDS)
ifeq ($(RNNSCOPE_REQUIRE_BROWSER),1)
	command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }
endif
	$(BIN)/python -m pytest

bench: $(TEST_STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) test-artifacts bench/results
