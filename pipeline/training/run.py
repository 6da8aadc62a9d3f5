"""The train stage: one (split, model, seed) run from params to a finished run folder."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from pipeline.config import evaluation_config, model_config, training_config
from pipeline.data.dataset import load_interactions
from pipeline.models import MODELS
from pipeline.training.trainer import set_determinism, train_run


def build_model(params: dict, model_name: str, split: str, seed: int, n_users: int, n_items: int):
    cfg = model_config(params, model_name, split)
    set_determinism(seed, params["training"]["threads"])  # initial weights depend on the seed
    return MODELS[model_name](cfg, n_users, n_items)


def main(params: dict, split: str, model_name: str, seed: int, data_dir: str, out_dir: str) -> dict:
    data = load_interactions(data_dir)
    model = build_model(params, model_name, split, seed, data.n_users, data.n_items)
    tag = f"{split} {model_name} seed {seed}"
    print(
        f"[{tag}] {data.n_users} users, {data.n_items} items, {data.train.nnz} train interactions; "
        f"{sum(p.numel() for p in model.parameters()):,} parameters; {model.config}",
        flush=True,
    )
    identity = {"model": model_name, "split": split, "seed": seed, "config": dataclasses.asdict(model.config)}
    metrics = train_run(
        model, data, training_config(params), evaluation_config(params), out_dir, identity, seed, tag=tag,
        timing_path=Path("logs") / "timing" / f"{split}_{model_name}_seed{seed}.json",
    )
    k = params["training"]["select_metric"]
    ndcg = k.replace("recall", "ndcg")
    print(
        f"[{tag}] best epoch {metrics['best_epoch']}: valid {k} {metrics['valid'][k]:.4f}; "
        f"test {k} {metrics['test'][k]:.4f}, {ndcg} {metrics['test'].get(ndcg, float('nan')):.4f}",
        flush=True,
    )
    return metrics
