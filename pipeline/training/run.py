"""The train stage: one (split, model, seed) run from params to a finished run folder."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import polars as pl

from pipeline.config import HYPERBOLIC_DIR, evaluation_config, model_class, model_config, run_threads, training_config
from pipeline.data.dataset import load_interactions
from pipeline.io import read_parquet
from pipeline.training.trainer import set_determinism, train_run


def build_model(params: dict, model_name: str, split: str, seed: int, n_users: int, n_items: int, tuned: dict | None = None, **side):
    """Seeded model construction. ``tuned``: a grid point's setting (see pipeline.tuning). ``side``:
    optional inputs a model may take by keyword, ``data`` (the InteractionData, for graph models)
    and ``clusters`` (item -> cluster array)."""
    cfg = model_config(params, model_name, split, tuned)
    set_determinism(seed, run_threads(params, model_name))  # initial weights depend on the seed
    return model_class(params, model_name)(cfg, n_users, n_items, **side)


def load_clusters(params: dict, variant: str, clusters_dir: str | None, n_items: int) -> np.ndarray | None:
    """The item -> cluster array a latent variant needs (from its embeddings' folder), else None."""
    if not getattr(model_class(params, variant), "needs_clusters", False):
        return None
    if not clusters_dir:
        raise ValueError(f"model variant {variant!r} needs item clusters: pass --clusters data/clusters/<split>")
    path = Path(clusters_dir) / params["models"][variant]["embeddings"] / "clusters.parquet"
    table = read_parquet(path, made_by="cluster").sort("item")
    if table.height != n_items or table["item"].to_list() != list(range(n_items)):
        raise ValueError(f"{path}: expected one cluster per item 0..{n_items - 1}, got {table.height} rows")
    return table["cluster"].to_numpy().astype(np.int64)


def load_hyperbolic(params: dict, variant: str, hyperbolic_dir: str | None, n_users: int, n_items: int):
    """HDRM's stage-1 embeddings (the embed-hyperbolic stage's folder) for a variant that needs
    them, else None."""
    if not getattr(model_class(params, variant), "needs_hyperbolic", False):
        if hyperbolic_dir:
            raise ValueError(f"--hyperbolic given, but model variant {variant!r} does not use hyperbolic embeddings")
        return None
    if not hyperbolic_dir:
        raise ValueError(f"model variant {variant!r} needs the stage-1 hyperbolic embeddings: pass "
                         f"--hyperbolic {HYPERBOLIC_DIR.format(split='<split>')}")
    from pipeline.hyperbolic import load_hyperbolic_embeddings

    return load_hyperbolic_embeddings(hyperbolic_dir, n_users, n_items)


def fit(params: dict, split: str, model_name: str, seed: int, data, out_dir, tag: str, timing_path, clusters=None, tuned=None,
        hyperbolic=None):
    """Build the seeded model (given ``data``, for latent models ``clusters``, for HDRM the
    ``hyperbolic`` stage-1 embeddings, for tuned variants the ``tuned`` setting), announce it, and
    train it into ``out_dir``; returns (model, metrics).

    Shared by the train, tune and embedding stages.
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
    training = dataclasses.replace(training_config(params), threads=run_threads(params, model_name))
    metrics = train_run(
        model, data, training, evaluation_config(params), out_dir, identity, seed, tag=tag,
        timing_path=timing_path,
    )
    return model, metrics


def main(params: dict, split: str, model_name: str, seed: int, data_dir: str, out_dir: str, clusters_dir: str | None = None,
         tuned_path: str | None = None, hyperbolic_dir: str | None = None, *, tag: str | None = None,
         timing_path: Path | None = None, reuse_tuned_run: bool = True) -> dict:
    """One run; ``tuned_path``: the tune stage's selected.json, required for variants with a grid;
    ``hyperbolic_dir``: the embed-hyperbolic stage's folder, required for HDRM.

    ``reuse_tuned_run``: the seed the grid was trained with copies the tune stage's run of the
    selected setting (the train stage); off, it is trained again (the verify stage), and ``tag`` /
    ``timing_path`` keep its log lines and timing apart from the train stage's."""
    data = load_interactions(data_dir)
    clusters = load_clusters(params, model_name, clusters_dir, data.n_items)
    hyperbolic = load_hyperbolic(params, model_name, hyperbolic_dir, data.n_users, data.n_items)
    tuned = None
    tag = tag or f"{split} {model_name} seed {seed}"
    timing_path = timing_path or Path("logs") / "timing" / f"{split}_{model_name}_seed{seed}.json"
    if params["models"][model_name].get("grid"):
        if not tuned_path:
            raise ValueError(f"model variant {model_name!r} is tuned on a grid: pass --tuned runs/<split>/{model_name}/tuning/selected.json")
        from pipeline.tuning import read_selected, reuse_selected_run

        tuned = read_selected(tuned_path)
        reused = reuse_selected_run(tuned_path, split, model_name, seed, out_dir, timing_path) if reuse_tuned_run else None
        if reused is not None:
            print(f"[{tag}] the tune stage's run of the selected setting {tuned} (same seed): copied, not retrained", flush=True)
            return reused
    elif tuned_path:
        raise ValueError(f"--tuned given, but model variant {model_name!r} has no grid (models.{model_name}.grid)")
    _, metrics = fit(params, split, model_name, seed, data, out_dir, tag, timing_path, clusters, tuned, hyperbolic)
    k = params["training"]["select_metric"]
    ndcg = k.replace("recall", "ndcg")
    print(
        f"[{tag}] best epoch {metrics['best_epoch']}: valid {k} {metrics['valid'][k]:.4f}; "
        f"test {k} {metrics['test'][k]:.4f}, {ndcg} {metrics['test'].get(ndcg, float('nan')):.4f}",
        flush=True,
    )
    return metrics
