# Two commands matter: `make run` starts the bot, `make test` runs the whole test suite.
# Each creates .venv on first use and reinstalls the project only when pyproject.toml changed.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run play check test soak bench bench-scale image-test clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is needed (found %s); run: make PYTHON=python3.11 ..." % sys.version.split()[0])'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/dungeon-master run

play: $(STAMP)
	$(BIN)/dungeon-master play

check: $(STAMP)
	$(BIN)/dungeon-master check

test: $(STAMP)
	$(BIN)/python -m pytest -q

soak: $(STAMP)
	$(BIN)/python -m pytest -q -rP -m soak --run-soak tests

$(VENV)/.bench-installed: pyproject.toml $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	@touch $@

bench: $(VENV)/.bench-installed
	$(BIN)/python -m bench

# When to scale out: SQLite vs PostgreSQL vs two shard processes (needs PostgreSQL and Redis on 127.0.0.1).
bench-scale: $(STAMP)
	$(BIN)/python -m bench.scale

# Build the container image with podman or docker and play /start + /act with it (not part of `make test`).
image-test: $(STAMP)
	$(BIN)/python -m tests.image.check_image

clean:
	rm -rf $(VENV) .pytest_cache
