# Shared helpers: semantic checks of params and the code files each stage depends on.
from glob import glob

from pipeline.config import check_semantics

check_semantics(config)


def code(*patterns):
    """Source files a stage depends on (the same set dvc.yaml lists as deps)."""
    return sorted(f for p in patterns for f in glob(p))


CODE = {
    "download": code("pipeline/data/download.py"),
    "prepare": code("pipeline/data/readers.py", "pipeline/data/prepare.py"),
    "train": code("pipeline/data/dataset.py", "pipeline/models/*.py", "pipeline/training/*.py", "pipeline/evaluation/*.py"),
    "aggregate": code("pipeline/reporting/*.py"),
}

EXPERIMENTS = config["experiments"]
RUN_DIR = "runs/{split}/{model}/seed{seed}"
SETTINGS = sorted({config["splits"][s]["setting"] for s in EXPERIMENTS["splits"]})
