# Shared helpers: semantic checks of params, the run list, and the code each stage depends on.
from glob import glob

from pipeline.config import (
    HYPERBOLIC_DIR,
    HYPERBOLIC_MODEL,
    check_semantics,
    hyperbolic_splits,
    is_tuned as config_is_tuned,
    model_class,
    planned_runs,
    run_threads,
    tune_runs,
)
from pipeline.supervision import stop_jobs_with_runner

check_semantics(config)
stop_jobs_with_runner()  # SIGINT/SIGTERM to snakemake stops its jobs too; a job stops when snakemake is gone


def code(*patterns):
    """Source files a stage depends on (the same set dvc.yaml lists as deps). Marked local():
    with a storage provider (workflow/profiles/kubernetes) the code is in the job's image, not in
    storage."""
    return [local(f) for f in sorted(f for p in patterns for f in glob(p))]


TRAIN_CODE = ("pipeline/data/dataset.py", "pipeline/models/*.py", "pipeline/models/fast/*.py", "pipeline/training/*.py", "pipeline/evaluation/*.py",
              "pipeline/tuning.py", "pipeline/hyperbolic.py")
CODE = {
    "download": code("pipeline/data/download.py"),
    "prepare": code("pipeline/data/readers.py", "pipeline/data/prepare.py"),
    "embed": code("pipeline/embeddings.py", *TRAIN_CODE),
    "embed_hyperbolic": code("pipeline/embeddings.py", *TRAIN_CODE),
    "import_embeddings": code("pipeline/embeddings.py"),
    "cluster": code("pipeline/clustering.py"),
    "train": code(*TRAIN_CODE),
    "tune": code(*TRAIN_CODE),
    "aggregate": code("pipeline/reporting/*.py"),
}

# Scheduler resources. Every rule declares threads, mem_mb and runtime (minutes); the training
# rules (train, tune, embed, embed_hyperbolic) also declare gpu: one GPU when training.device is "cuda" or "auto", none
# for "cpu". Locally these only order the jobs; cluster executors (workflow/profiles/slurm,
# workflow/profiles/kubernetes) turn them into job requests. Sizes fit ML-1M; for Yelp or
# Amazon-book scale raise them with --set-resources (benchmarks/bench_scale.py measures peaks).
GPUS = 0 if config["training"]["device"] == "cpu" else 1
MEM_MB = {"prepare": 4000, "train": 4000}
RUNTIME_MIN = {"train": 120, "tune": 480}

RUNS = planned_runs(config)  # (split, model variant, seed)
TUNE_SEED = {(split, model): seed for split, model, seed in tune_runs(config)}  # the grid's seed
HYPERBOLIC_SPLITS = hyperbolic_splits(config)  # where HDRM's stage 1 runs
RUN_DIR = "runs/{split}/{model}/seed{seed}"
TUNE_DIR = "runs/{split}/{model}/tuning"  # the tune stage's folder (grid runs, grid.csv, selected.json)
SETTINGS = sorted({config["splits"][split]["setting"] for split, _, _ in RUNS})
EMBEDDINGS = config["embeddings"]["sources"]


def needs_clusters(variant):
    """Latent models run on the item clusters of their embeddings (the model's ``requires``)."""
    return "clusters" in model_class(config, variant).requires


def needs_hyperbolic(variant):
    """HDRM runs on the embed-hyperbolic stage's user and item points (the model's ``requires``)."""
    return "hyperbolic" in model_class(config, variant).requires


def is_tuned(variant):
    """Variants with a hyperparameter grid (the baselines) run the tune stage first."""
    return config_is_tuned(config, variant)
