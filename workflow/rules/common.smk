# Shared helpers: semantic checks of params, the run list, and the code each stage depends on.
from glob import glob

from pipeline.config import check_semantics, model_class, planned_runs

check_semantics(config)


def code(*patterns):
    """Source files a stage depends on (the same set dvc.yaml lists as deps)."""
    return sorted(f for p in patterns for f in glob(p))


TRAIN_CODE = ("pipeline/data/dataset.py", "pipeline/models/*.py", "pipeline/training/*.py", "pipeline/evaluation/*.py")
CODE = {
    "download": code("pipeline/data/download.py"),
    "prepare": code("pipeline/data/readers.py", "pipeline/data/prepare.py"),
    "embed": code("pipeline/embeddings.py", *TRAIN_CODE),
    "import_embeddings": code("pipeline/embeddings.py"),
    "cluster": code("pipeline/clustering.py"),
    "train": code(*TRAIN_CODE),
    "aggregate": code("pipeline/reporting/*.py"),
}

RUNS = planned_runs(config)  # (split, model variant, seed)
RUN_DIR = "runs/{split}/{model}/seed{seed}"
SETTINGS = sorted({config["splits"][split]["setting"] for split, _, _ in RUNS})
EMBEDDINGS = config["embeddings"]["sources"]


def needs_clusters(variant):
    return bool(getattr(model_class(config, variant), "needs_clusters", False))
