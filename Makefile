# Everything a fresh machine with Python 3.11 and make needs; nothing is installed by hand.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo test test-fast lint install system bench clean

$(BIN)/oppscore: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(BIN)/oppscore

## Debian packages the browser and PostgreSQL tests drive (chromium; postgresql for a throwaway
## cluster): installed when missing and this is a Debian machine we may install on; otherwise
## those tests fail, saying what is missing.
system:
	@if ! command -v chromium >/dev/null 2>&1 || ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    (apt-get install -y -q chromium postgresql >/dev/null 2>&1 || (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium postgresql >/dev/null 2>&1)) \
	      || echo "make system: could not install chromium/postgresql; the browser and PostgreSQL tests will fail"; \
	  else echo "make system: chromium or postgresql missing and not installable here; the browser and PostgreSQL tests will fail"; fi; \
	fi

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
test: install system
	OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 $(BIN)/python -m pytest -n 2 -q

## The fast loop: everything not marked slow (no real training of full models, no started processes).
test-fast: install
	OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 $(BIN)/python -m pytest -n 2 -q -m "not slow"

bench: install
	$(BIN)/python benchmarks/features.py

## Everything the set-up and the demo made: the environment, the local MLflow store and score
## history, the demo's export and the exported champions (models/README.md stays).
clean:
	rm -rf $(VENV) .oppscore build *.egg-info test-artifacts demo-data models/champion models/.champion* models/*/champion models/*/.champion*
