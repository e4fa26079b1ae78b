# Everything a fresh machine with Python 3.11 and make needs; nothing is installed by hand.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo test lint install bench clean

$(BIN)/oppscore: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(BIN)/oppscore

## The main job on embedded defaults: demo data, training, champion, service on localhost.
demo: install
	$(BIN)/oppscore demo

## ruff, and the import direction between the packages (import-linter, contracts in pyproject.toml).
lint: install
	$(BIN)/ruff check .
	$(BIN)/lint-imports

## The whole test suite.
test: install
	$(BIN)/python -m pytest -n 2 -q

bench: install
	$(BIN)/python benchmarks/features.py

clean:
	rm -rf $(VENV) .oppscore build *.egg-info
