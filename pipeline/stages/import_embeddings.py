"""The import-embeddings stage: DiffRec's released item embeddings as the "released" source.

:func:`main` copies the authors' released ``item_emb.npy`` (a pre-trained LightGCN,
64-d) from the split's raw archive after checking it fits the prepared split; the cluster stage
then clusters it like the embed stage's LightGCN vectors.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.io import read_json, write_embeddings

EMBEDDINGS_FILE = "item_emb.npy"


def main(raw_dir: str, data_dir: str, out_dir: str) -> None:
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
