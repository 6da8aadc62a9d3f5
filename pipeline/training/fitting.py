"""Building and training one model: shared by the train, tune and embedding stages.

:func:`fit` builds the seeded model from params (with its side inputs: the training data, item
clusters, HDRM's stage-1 points) and trains it into a run folder with the shared trainer.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np

from pipeline.config import evaluation_config, model_class, model_config, training_config
from pipeline.plan import EMBED_DIR, run_threads, stage1_model
from pipeline.io import read_parquet
from pipeline.models import fast
from pipeline.training.trainer import set_determinism, train_run


def build_model(params: dict, model_name: str, split: str, seed: int, n_users: int, n_items: int, tuned: dict | None = None, **side):
    """Seeded model construction, with the speed-ups of ``pipeline/models/fast`` switched on or off
    for the process as ``training.fast`` says. ``tuned``: a grid point's setting (see
    pipeline.stages.tune). ``side``: optional inputs a model may take by keyword, ``data`` (the
    InteractionData, for graph models) and ``clusters`` (item -> cluster array)."""
    cfg = model_config(params, model_name, split, tuned)
    fast.set_enabled(params["training"].get("fast", True))  # the speed-ups' one switch (pipeline/models/fast)
    set_determinism(seed, run_threads(params, model_name))  # initial weights depend on the seed
    return model_class(params, model_name)(cfg, n_users, n_items, **side)


def load_clusters(params: dict, variant: str, clusters_dir: str | None, n_items: int) -> np.ndarray | None:
    """The item -> cluster array a latent variant needs (from its embeddings' folder), else None."""
    if "clusters" not in model_class(params, variant).requires:
        return None
    if not clusters_dir:
        raise ValueError(f"model variant {variant!r} needs item clusters: pass --clusters data/clusters/<split>")
    path = Path(clusters_dir) / params["models"][variant]["embeddings"] / "clusters.parquet"
    table = read_parquet(path, made_by="cluster").sort("item")
    if table.height != n_items or table["item"].to_list() != list(range(n_items)):
        raise ValueError(f"{path}: expected one cluster per item 0..{n_items - 1}, got {table.height} rows")
    return table["cluster"].to_numpy().astype(np.int64)


def load_hyperbolic(params: dict, variant: str, hyperbolic_dir: str | None, n_users: int, n_items: int):
    """HDRM's stage-1 embeddings (the embed stage's HGCF folder) for a variant that needs
    them, else None."""
    if "hyperbolic" not in model_class(params, variant).requires:
        if hyperbolic_dir:
            raise ValueError(f"--hyperbolic given, but model variant {variant!r} does not use hyperbolic embeddings")
        return None
    if not hyperbolic_dir:
        raise ValueError(f"model variant {variant!r} needs the stage-1 hyperbolic embeddings: pass "
                         f"--hyperbolic {EMBED_DIR.format(split='<split>', model=stage1_model(params, variant))}")
    from pipeline.models.lorentz import load_hyperbolic_embeddings

    return load_hyperbolic_embeddings(hyperbolic_dir, n_users, n_items)


def run_training(params: dict, split: str, variant: str):
    """The training settings of ``variant``'s runs on ``split``: the split's, at the variant's threads."""
    return dataclasses.replace(training_config(params, split), threads=run_threads(params, variant))


def fit(params: dict, split: str, model_name: str, seed: int, data, out_dir, tag: str, timing_path, clusters=None, tuned=None,
        hyperbolic=None):
    """Build the seeded model (given ``data``, for latent models ``clusters``, for HDRM the
    ``hyperbolic`` stage-1 embeddings, for tuned variants the ``tuned`` setting), announce it, and
    train it into ``out_dir``; returns (model, metrics).

    Shared by the train and tune stages (the embed stage exports a trained run's state: it builds
    the model with :func:`build_model` and trains nothing).
    """
    side = {"data": data}
    if clusters is not None:
        side["clusters"] = clusters
    if hyperbolic is not None:
        side["hyperbolic"] = hyperbolic
    model = build_model(params, model_name, split, seed, data.n_users, data.n_items, tuned, **side)
    print(
        f"[{tag}] {data.n_users} users, {data.n_items} items, {data.train.nnz} train interactions; "
        f"{sum(p.numel() for p in model.parameters()):,} parameters; {model.config}",
        flush=True,
    )
    identity = {"model": model_name, "split": split, "seed": seed, "config": dataclasses.asdict(model.config)}
    if hyperbolic is not None:  # a checkpoint made on other stage-1 embeddings is not resumed
        identity["hyperbolic"] = hashlib.sha256(hyperbolic.users.tobytes() + hyperbolic.items.tobytes()).hexdigest()
    metrics = train_run(
        model, data, run_training(params, split, model_name), evaluation_config(params), out_dir, identity, seed, tag=tag,
        timing_path=timing_path,
    )
    return model, metrics
