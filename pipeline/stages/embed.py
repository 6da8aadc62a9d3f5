"""The embed stage: the item vectors L-DiffRec clusters, and HDRM's stage-1 points.

:func:`main` (``python -m pipeline embed --model M``) trains an
  embedding model (a variant of a class in ``pipeline.plan.EMBED_CLASSES``) on the split's train interactions with the
  shared trainer (early stopping on validation) and writes its best state's final user and item
  embeddings, ``user_emb.npy`` and ``item_emb.npy`` (float32, its ``final_embeddings()``):
  LightGCN's (``models.lightgcn``) propagated vectors, whose items the cluster stage clusters;
  HGCF's (``models.hgcf``, or another HGCF variant a HDRM variant names as its
  ``embeddings``: HDRM's stage 1) points of the hyperboloid, which HDRM reads
  (:func:`pipeline.models.lorentz.load_hyperbolic_embeddings`). The authors' released item vectors
come in through the import-embeddings stage (``pipeline/stages/import_embeddings.py``).
"""

from __future__ import annotations

from pathlib import Path

from pipeline.data.dataset import load_interactions
from pipeline.io import write_embeddings
from pipeline.plan import EMBED_FILES, embed_models
from pipeline.training.checkpoint import load_checkpoint
from pipeline.training.fitting import fit

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


def main(params: dict, split: str, model_name: str, data_dir: str, out_dir: str, seed: int | None = None) -> dict:
    """Train the embedding model ``models.<model_name>`` on ``data_dir`` with the shared trainer
    (seed ``seed``, default ``params['embeddings']['seed']``) into ``out_dir``; writes the run
    folder plus its embedding files; returns the metrics."""
    if model_name not in embed_models(params):
        raise ValueError(f"the embed stage trains the embedding models {embed_models(params)}, not {model_name!r}")
    seed = int(params["embeddings"]["seed"]) if seed is None else int(seed)
    model, metrics, tag = _train_best(params, split, model_name, seed, data_dir, out_dir, "embed")
    arrays = dict(zip(EMBED_FILES, model.final_embeddings()))
    out = Path(out_dir)
    for name, array in arrays.items():
        write_embeddings(out / name, array.numpy())
    _report(params, tag, metrics, " and ".join(f"{out / name} {tuple(a.shape)}" for name, a in arrays.items()))
    return metrics
