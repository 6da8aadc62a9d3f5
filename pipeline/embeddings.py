"""The embed and import-embeddings stages: the item vectors L-DiffRec clusters, and HDRM's
stage-1 points.

* :func:`train_embeddings` (the embed stage, ``python -m pipeline embed --model M``) trains an
  embedding model (``pipeline.plan.EMBED_MODELS``) on the split's train interactions with the
  shared trainer (early stopping on validation) and writes its best state's final user and item
  embeddings, ``user_emb.npy`` and ``item_emb.npy`` (float32, its ``final_embeddings()``):
  LightGCN's (``models.lightgcn``) propagated vectors, whose items the cluster stage clusters;
  HGCF's (``models.hgcf``, HDRM's stage 1) points of the hyperboloid, which HDRM reads
  (:func:`pipeline.hyperbolic.load_hyperbolic_embeddings`);
* :func:`import_released` copies the authors' released ``item_emb.npy`` (a pre-trained LightGCN,
  64-d) after checking it fits the prepared split.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline import hyperbolic
from pipeline.plan import EMBED_FILES, EMBED_MODELS
from pipeline.data.dataset import load_interactions
from pipeline.io import atomic_path, read_json
from pipeline.training.checkpoint import load_checkpoint
from pipeline.training.fitting import fit

EMBEDDINGS_FILE = "item_emb.npy"


def write_embeddings(path: str | Path, embeddings: np.ndarray) -> None:
    """Atomic ``np.save`` of a float32 array (through a file handle, so no '.npy' is appended)."""
    array = np.ascontiguousarray(embeddings, dtype=np.float32)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, array, allow_pickle=False)


def _train_best(params: dict, split: str, variant: str, seed: int, data_dir: str, out_dir: str, stage: str):
    """Train ``models.<variant>`` on ``data_dir`` with the shared trainer into ``out_dir`` and load
    its best state; returns (model, metrics, tag of its log lines)."""
    out = Path(out_dir)
    tag = f"{split} {variant}-embeddings seed {seed}"
    timing_path = Path("logs") / "timing" / f"{split}_{variant}-embeddings.json"
    model, metrics = fit(params, split, variant, seed, load_interactions(data_dir), out, tag, timing_path)
    model.load_state_dict(load_checkpoint(out / "model.pt", made_by=stage)["model"])
    return model, metrics, tag


def _report(params: dict, tag: str, metrics: dict, wrote: str) -> None:
    k = params["training"]["select_metric"]
    print(
        f"[{tag}] best epoch {metrics['best_epoch']}: valid {k} {metrics['valid'][k]:.4f}, test {k} "
        f"{metrics['test'][k]:.4f}; wrote {wrote}",
        flush=True,
    )


def import_released(raw_dir: str, data_dir: str, out_dir: str) -> None:
    """Copy the one ``item_emb.npy`` found under ``raw_dir`` to ``out_dir`` as float32, after
    checking that it is a 2-D float array with one row per item of the prepared split."""
    found = sorted(p for p in Path(raw_dir).rglob(EMBEDDINGS_FILE) if p.is_file())
    if not found:
        raise FileNotFoundError(f"no {EMBEDDINGS_FILE} under {raw_dir}: this source ships no released item embeddings")
    if len(found) > 1:
        raise ValueError(f"several {EMBEDDINGS_FILE} under {raw_dir}, expected exactly one: {[str(p) for p in found]}")
    source = found[0]
    array = np.load(source, allow_pickle=False)
    if array.ndim != 2 or not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"{source}: expected a 2-D float array (items x dims), got {array.dtype} with shape {array.shape}")
    n_items = int(read_json(Path(data_dir) / "stats.json")["n_items"])
    if array.shape[0] != n_items:
        raise ValueError(
            f"{source} has {array.shape[0]} rows but the prepared split in {data_dir} has {n_items} items; "
            "the embeddings do not belong to this split"
        )
    if not np.isfinite(array).all():
        raise ValueError(f"{source}: holds NaN or infinite values")
    write_embeddings(Path(out_dir) / EMBEDDINGS_FILE, array)
    print(f"[embeddings] imported {source} {array.shape} {array.dtype} -> {Path(out_dir) / EMBEDDINGS_FILE}", flush=True)


def train_embeddings(params: dict, split: str, model_name: str, data_dir: str, out_dir: str, seed: int | None = None) -> dict:
    """Train the embedding model ``models.<model_name>`` on ``data_dir`` with the shared trainer
    (seed ``seed``, default ``params['embeddings']['seed']``) into ``out_dir``; writes the run
    folder plus its embedding files; returns the metrics."""
    if model_name not in EMBED_MODELS:
        raise ValueError(f"the embed stage trains the embedding models {list(EMBED_MODELS)}, not {model_name!r}")
    seed = int(params["embeddings"]["seed"]) if seed is None else int(seed)
    model, metrics, tag = _train_best(params, split, model_name, seed, data_dir, out_dir, "embed")
    arrays = dict(zip(EMBED_FILES, model.final_embeddings()))
    out = Path(out_dir)
    for name, array in arrays.items():
        write_embeddings(out / name, array.numpy())
    _report(params, tag, metrics, " and ".join(f"{out / name} {tuple(a.shape)}" for name, a in arrays.items()))
    return metrics
