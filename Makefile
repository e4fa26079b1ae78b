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
# One thread per test worker: two workers on two cores, each with its own LightGBM and BLAS
# threads, would oversubscribe the cores (OpenMP threads spin while they wait).
test: install
	OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 $(BIN)/python -m pytest -n 2 -q

bench: install
	$(BIN)/python benchmarks/features.py

clean:
	rm -rf $(VENV) .oppscore build *.egg-info
