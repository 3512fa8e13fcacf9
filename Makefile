# Each target sets up what it needs from a fresh clone: a .venv with rnnscope installed,
# with Ray (the cluster extra) so `make test` runs the cluster tests too.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install serve test bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test,cluster]'
	touch $(STAMP)

install: $(STAMP)

# Settings come from RNNSCOPE_* variables, given either way: make serve RNNSCOPE_PORT=8001
# or RNNSCOPE_PORT=8001 make serve (make exports both to the command).
serve: $(STAMP)
	$(BIN)/rnnscope serve

test: $(STAMP)
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) test-artifacts bench/results
