# Shared helpers: semantic checks of params, the run plan (pipeline/plan.py, the same plan
# dvc.yaml is rendered from), and the code each stage depends on.

from pipeline import plan
from pipeline.config import check_semantics
from pipeline.supervision import stop_jobs_with_runner

check_semantics(config)  # torch-free; `python -m pipeline check` (onstart, below) also builds every model config
stop_jobs_with_runner()  # SIGINT/SIGTERM to snakemake stops its jobs too; a job stops when snakemake is gone


onstart:
    shell("python -m pipeline check")


def code(stage, model=None):
    """The source files a job runs (pipeline.plan.job_code: its stage module, its model's file and
    what they import; the same files dvc.yaml lists as deps). Marked local(): with a storage
    provider (workflow/profiles/kubernetes) the code is in the job's image, not in storage."""
    return [local(f) for f in plan.job_code(config, stage, model)]


# Scheduler resources. Every rule declares threads, mem_mb and runtime (minutes); the training
# rules (train, tune) also declare gpu: one GPU when training.device is "cuda" or "auto",
# none for "cpu". Locally these only order the jobs; cluster executors (workflow/profiles/slurm,
# workflow/profiles/kubernetes) turn them into job requests. Sizes fit ML-1M; for Yelp or
# Amazon-book scale raise them with --set-resources (benchmarks/bench_scale.py measures peaks).
GPUS = 0 if config["training"]["device"] == "cpu" else 1
MEM_MB = {"prepare": 4000, "train": 4000}
RUNTIME_MIN = {"train": 120, "tune": 480}

TABLE_RUNS = plan.table_runs(config)  # (split, model variant, seed) of the tables
RUNS = plan.trained_runs(config)  # the runs trained for them (a reused temporal run is its clean twin's)
TUNE_SEED = {(split, model): seed for split, model, seed in plan.tune_runs(config)}  # the grid's seed
SETTINGS = sorted({config["splits"][split]["setting"] for split, _, _ in TABLE_RUNS})


def run_of(w):
    return plan.Run(w.split, w.model, int(w.seed) if hasattr(w, "seed") else TUNE_SEED[(w.split, w.model)])


def dotted(keys):
    """{dotted params key: its value}: a job's params, so Snakemake reruns it when one changes."""
    return {key: plan.param_value(config, key) for key in keys}


# The order of the jobs: each one's measured seconds plus the longest chain of measured jobs that
# waits on it (pipeline.plan.job_priorities, from workflow/job_seconds.json, which
# benchmarks/dag_timeline.py --job-seconds writes from a timed run's log; an unmeasured job counts
# as its rule's longest measured one).
PRIORITY = plan.job_priorities(config, plan.read_job_seconds())


def job_priority(rule):
    """The priority of ``rule``'s job for wildcards w (higher runs first; the order changes no result)."""
    return lambda w: PRIORITY.get(plan.wildcards_job_key(rule, dict(w.items())), 0)
