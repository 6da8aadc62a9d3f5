"""The clustering stage: item embeddings -> item clusters for L-DiffRec.

L-DiffRec splits the items into ``n_clusters`` groups by k-means on pre-trained item embeddings
(LightGCN's) and compresses each group with its own encoder. The authors clustered with
kmeans_pytorch; we use scikit-learn's KMeans (k-means++ init, n_init restarts, seeded), so
cluster assignments differ from theirs even on the released embeddings.

Cluster labels are canonical: clusters are numbered by the smallest item index they contain
(the cluster holding item 0 is cluster 0), so the output does not depend on scikit-learn's label
numbering. Outputs: ``clusters.parquet`` (item, cluster; Int32, sorted by item) and ``sizes.json``
(n_clusters, sizes, inertia).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import polars as pl
from sklearn.cluster import KMeans

from pipeline.io import atomic_path, write_json


def canonical_labels(labels: np.ndarray) -> np.ndarray:
    """Relabel so that clusters are numbered in order of their smallest member index."""
    labels = np.asarray(labels)
    _, first = np.unique(labels, return_index=True)  # first occurrence of every label
    order = labels[np.sort(first)]  # labels in order of first appearance
    mapping = np.empty(labels.max() + 1, dtype=np.int64)
    mapping[order] = np.arange(len(order))
    return mapping[labels]


def fit_clusters(embeddings: np.ndarray, n_clusters: int, seed: int, n_init: int) -> tuple[np.ndarray, float]:
    """(canonical labels (n_items,) int64, inertia) of seeded k-means on the rows of ``embeddings``."""
    x = np.asarray(embeddings)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be a 2-D array (items x dims), got shape {x.shape}")
    n_items = x.shape[0]
    if not isinstance(n_clusters, (int, np.integer)) or n_clusters < 1:
        raise ValueError(f"n_clusters must be an integer >= 1, got {n_clusters!r}")
    if n_clusters > n_items:
        raise ValueError(f"n_clusters = {n_clusters} is more than the number of items ({n_items})")
    if n_init < 1:
        raise ValueError(f"n_init must be >= 1, got {n_init!r}")
    x = x.astype(np.float64)
    if not np.isfinite(x).all():
        raise ValueError("embeddings hold NaN or infinite values")
    with warnings.catch_warnings():  # too few distinct points: reported below as an error
        warnings.filterwarnings("ignore", message="Number of distinct clusters")
        km = KMeans(n_clusters=n_clusters, random_state=seed, n_init=n_init).fit(x)
    labels = np.asarray(km.labels_)
    found = len(np.unique(labels))
    if found != n_clusters:
        raise ValueError(
            f"k-means found only {found} non-empty clusters of the {n_clusters} asked "
            "(too few distinct embeddings); lower clustering.n_clusters"
        )
    return canonical_labels(labels), float(km.inertia_)


def cluster_items(embeddings: np.ndarray, n_clusters: int, seed: int, n_init: int) -> np.ndarray:
    """Item -> cluster (int64, canonical numbering) by seeded scikit-learn k-means."""
    return fit_clusters(embeddings, n_clusters, seed, n_init)[0]


def main(params: dict, split: str, embeddings_path: str, out_dir: str) -> dict:
    """Cluster ``embeddings_path`` (an ``item_emb.npy``) with ``params['clustering']``; writes
    ``clusters.parquet`` and ``sizes.json`` to ``out_dir`` and returns the sizes summary."""
    cfg = params["clustering"]
    n_clusters, seed, n_init = int(cfg["n_clusters"]), int(cfg["seed"]), int(cfg["n_init"])
    embeddings = np.load(embeddings_path, allow_pickle=False)
    labels, inertia = fit_clusters(embeddings, n_clusters, seed, n_init)
    out = Path(out_dir)
    table = pl.DataFrame(
        {"item": np.arange(len(labels), dtype=np.int32), "cluster": labels.astype(np.int32)},
        schema={"item": pl.Int32, "cluster": pl.Int32},
    )
    with atomic_path(out / "clusters.parquet") as tmp:
        table.write_parquet(tmp, statistics=False)
    sizes = np.bincount(labels, minlength=n_clusters).tolist()
    summary = {"n_clusters": n_clusters, "sizes": sizes, "inertia": round(inertia, 6)}
    write_json(out / "sizes.json", summary)
    print(
        f"[{split} clustering] {len(labels)} items x {embeddings.shape[1]} dims -> {n_clusters} clusters "
        f"(k-means, seed {seed}, n_init {n_init}): sizes {sizes}, inertia {summary['inertia']}",
        flush=True,
    )
    return summary
