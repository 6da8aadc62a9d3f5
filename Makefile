# Entry points for a fresh machine. `make reproduce` installs and runs the main job;
# `make test` runs the tests. Both create .venv on first use.
PYTHON ?= python3
VENV   := .venv
CORES  ?= 2
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: install reproduce test e2e bench dvc-repro

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -e ".[test]"
	touch $@

install: $(VENV)/.installed

## Main job: the default DAG of params.yaml (DiffRec on ML-1M clean + noisy, 3 seeds) -> results/
## Training is forced: the committed runs/*/metrics.json are recomputed (and must come out
## byte-identical: `git status` shows no change afterwards). Plain `snakemake` is incremental.
reproduce: install
	snakemake --cores $(CORES) --forcerun train

## Unit and integration tests
test: install
	python -m pytest -q

## Small end-to-end DAG run (ML-100K from the raw ratings) in a scratch folder
e2e: install
	bash tests/e2e/run.sh

## Speed and memory benchmark of the DiffRec ML-1M clean run
bench: install
	python benchmarks/bench_diffrec.py

## The same DAG through DVC
dvc-repro: install
	dvc repro
