# Entry points for a fresh machine. `make reproduce` installs and runs the main job;
# `make test` runs the tests. Both create .venv on first use.
PYTHON ?= python3
VENV   := .venv
CORES  ?= 2
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
# freed memory stays in the process (pipeline/allocator.py: no page faults for reused buffers;
# a third of a released-size HDRM epoch); PIPELINE_KEEP_FREED_MEMORY=0 leaves glibc's default
export PIPELINE_KEEP_FREED_MEMORY ?= 1

# Snakemake 9 reads a workflow profile only from ./profiles/default or an explicit flag; ours is
# workflow/profiles/default (rerun-incomplete, keep-incomplete, printed commands), so every
# target passes it.
SNAKEMAKE := snakemake --workflow-profile workflow/profiles/default --cores $(CORES)
# One DAG run at a time in this folder; a lock left by a killed snakemake is then stale and is
# cleared before the run (`--unlock`), so the same command resumes after any interruption.
LOCKED    := mkdir -p .snakemake && flock --nonblock --close .snakemake/make.lock

# `make verify`: the runs retrained and compared with the committed ones
VERIFY_RUNS ?= runs/ml-1m_clean/diffrec/seed1 runs/ml-1m_clean/multivae/seed1 runs/ml-1m_noisy/tvdiff-argsp/seed3
VERIFY_WORK ?= verify/$(or $(ONEDNN_MAX_CPU_ISA),default)

.PHONY: install reproduce reproduce-all results status test test-isa e2e verify bench bench-floor dvc-repro

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -e ".[test]"
	touch $@

install: $(VENV)/.installed

## Main job: the default DAG of params.yaml -> results/. Incremental: finished runs are kept;
## after Ctrl-C or a killed snakemake the same command resumes each run from its checkpoint.
## TARGETS="..." makes only those outputs and what they need, e.g. one part of the ML-1M table:
## make reproduce TARGETS="$(python benchmarks/bench_floor.py --targets first)"
TARGETS ?=
reproduce: install
	$(LOCKED) sh -c '$(SNAKEMAKE) --unlock >/dev/null 2>&1; $(SNAKEMAKE)$(if $(strip $(TARGETS)), $(strip $(TARGETS)))'

## Retrain every run and grid point from scratch (the committed runs/*/metrics.json are
## recomputed; on the machine and kernels that made them they come out byte-identical).
reproduce-all: install
	$(LOCKED) sh -c '$(SNAKEMAKE) --unlock >/dev/null 2>&1; $(SNAKEMAKE) --forcerun train tune'

## results/ regenerated from what git holds (runs/*/metrics.json, history.csv and the significance
## stage's results/significance.csv): the aggregate stage alone, no training, no DVC cache needed
results: install
	$(SNAKEMAKE) results/metrics.csv --allowed-rules aggregate --forcerun aggregate

## `dvc status` summarised in one line (stages lacking outputs, changed, or differing); `-v` lists them
status: install
	python workflow/scripts/dvc_status.py -v

## Unit and integration tests
test: install
	python -m pytest -q

## The tests again under another instruction set's kernels (AVX2 instead of AVX-512), as CI does
test-isa: install
	MKL_ENABLE_INSTRUCTIONS=AVX2 ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 python -m pytest -q

## Retrain VERIFY_RUNS (their inputs built first) and compare them with the committed runs
verify: install
	$(LOCKED) sh -c '$(SNAKEMAKE) --unlock >/dev/null 2>&1; $(SNAKEMAKE) $$(python -m pipeline verify --inputs $(VERIFY_RUNS:%=--run %) | grep -v "^\[verify\]")'
	python -m pipeline verify $(VERIFY_RUNS:%=--run %) --work $(VERIFY_WORK)

## Small end-to-end DAG run (ML-100K from the raw ratings) in a scratch folder
e2e: install
	bash tests/e2e/run.sh

## Speed and memory benchmark of the DiffRec ML-1M clean run
bench: install
	python benchmarks/bench_diffrec.py

## Every model of the plan against its arithmetic floor, and the whole table's job-seconds (its
## inputs built first: clusters, stage-1 points, the temporal split)
bench-floor: install
	$(LOCKED) sh -c '$(SNAKEMAKE) --unlock >/dev/null 2>&1; $(SNAKEMAKE) $$(python benchmarks/bench_floor.py --inputs)'
	python benchmarks/bench_floor.py

## The same DAG through DVC
dvc-repro: install
	dvc repro
