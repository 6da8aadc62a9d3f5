"""A tiny planted dataset in the canonical format, shared by the model and trainer tests.

Users fall into ``groups``; each user interacts with 9 items of its group's block of
``n_items // groups`` items plus (usually) one random item. Per user, in time order: the first
rows are train, then 2 valid, then 2 test. Written as ``interactions.parquet`` + ``stats.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl

from pipeline.stages.prepare import CANONICAL_SCHEMA


def write_planted(folder: Path, n_users: int = 60, n_items: int = 40, groups: int = 3, seed: int = 0) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    block = n_items // groups
    records = []
    for user in range(n_users):
        g = user % groups
        items = rng.choice(np.arange(g * block, (g + 1) * block), size=9, replace=False).tolist()
        extra = int(rng.integers(n_items))
        if extra not in items:
            items.insert(int(rng.integers(len(items) + 1)), extra)
        splits = ["train"] * (len(items) - 4) + ["valid"] * 2 + ["test"] * 2
        for order, (item, split) in enumerate(zip(items, splits)):
            records.append(dict(user=user, item=item, split=split, order=order, timestamp=1000 * user + order, rating=5.0))
    pl.DataFrame(records, schema=CANONICAL_SCHEMA).write_parquet(folder / "interactions.parquet")
    (folder / "stats.json").write_text(json.dumps({"n_users": n_users, "n_items": n_items}))
    return folder


def train_and_export(params: dict, split: str, model: str, data_dir: str, folder: str) -> dict:
    """An embedding model's path through the DAG: its train run of seed ``embeddings.seed`` into
    ``folder`` (the train stage), then its vectors exported next to the run (the embed stage);
    returns the run's metrics."""
    from pipeline.stages.embed import main as export
    from pipeline.stages.train import main as train

    metrics = train(params, split, model, int(params["embeddings"]["seed"]), data_dir, folder)
    export(params, split, model, data_dir, folder, folder)
    return metrics
