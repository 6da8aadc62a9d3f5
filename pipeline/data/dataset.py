"""The canonical table as sparse user x item matrices, and dense batches made from them.

Nothing here makes the whole user x item matrix dense: models read one batch of rows at a time
(:func:`dense_rows`), and the evaluator scores users in chunks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl
import scipy.sparse as sp
import torch

from pipeline.io import ArtifactError, read_json, read_parquet

if TYPE_CHECKING:  # annotations only: the data layer does not import the config module
    from pipeline.config import SplitConfig

TABLE_FILE = "interactions.parquet"
STATS_FILE = "stats.json"
MADE_BY = "prepare"  # the stage that writes both files
# stats.json keys that name the split a folder was prepared for (SplitConfig fields of the same name)
SPLIT_KEYS = ("dataset", "setting", "format")


@dataclass(frozen=True)
class InteractionData:
    """Binary CSR matrices (float32) per split, plus the train rows' time rank per user."""

    n_users: int
    n_items: int
    train: sp.csr_matrix
    valid: sp.csr_matrix
    test: sp.csr_matrix
    train_rank: sp.csr_matrix  # value = 1 + position among the user's train rows in time order

    def ground_truth(self, split: str) -> sp.csr_matrix:
        """The items to retrieve in ``split`` ("valid" or "test")."""
        return self.valid if split == "valid" else self.test


def _csr(df: pl.DataFrame, n_users: int, n_items: int, values: np.ndarray | None = None) -> sp.csr_matrix:
    users = df["user"].to_numpy()
    items = df["item"].to_numpy()
    data = np.ones(len(df), dtype=np.float32) if values is None else values.astype(np.float32)
    m = sp.csr_matrix((data, (users, items)), shape=(n_users, n_items), dtype=np.float32)
    m.sum_duplicates()
    m.sort_indices()
    return m


def load_interactions(folder: str | Path) -> InteractionData:
    """Load ``interactions.parquet`` + ``stats.json`` written by the prepare stage.

    The table's row counts must be the ones stats.json records (``n_interactions``,
    ``n_train``/``n_valid``/``n_test``, where recorded): a table and a stats.json of different
    prepare runs raise :class:`~pipeline.io.ArtifactError`, as does a table that is not readable
    Parquet.
    """
    folder = Path(folder)
    stats = read_json(folder / STATS_FILE)
    n_users, n_items = int(stats["n_users"]), int(stats["n_items"])
    df = read_parquet(folder / TABLE_FILE, MADE_BY, columns=["user", "item", "split", "order"])
    parts = {name: df.filter(pl.col("split") == name) for name in ("train", "valid", "test")}
    counts = {"n_interactions": df.height, **{f"n_{name}": part.height for name, part in parts.items()}}
    wrong = [f"{key} {stats[key]} there, {count} here" for key, count in counts.items() if key in stats and int(stats[key]) != count]
    if wrong:
        raise ArtifactError(
            f"{folder / TABLE_FILE} does not match {folder / STATS_FILE} ({'; '.join(wrong)}); both are made by "
            f"the `{MADE_BY}` stage: delete them and rerun {MADE_BY}"
        )
    train = parts["train"].unique(subset=["user", "item"], keep="first", maintain_order=True)
    train = train.sort(["user", "order"]).with_columns(
        (pl.col("order").rank("ordinal").over("user")).alias("rank")
    )
    binary = {name: _csr(p, n_users, n_items) for name, p in parts.items()}
    for m in binary.values():
        m.data[:] = 1.0
    rank = _csr(train, n_users, n_items, train["rank"].to_numpy())
    return InteractionData(n_users, n_items, binary["train"], binary["valid"], binary["test"], rank)


def check_prepared_for(folder: str | Path, split: SplitConfig) -> None:
    """Refuse a prepared folder whose stats.json records another split than ``split``
    (compares :data:`SPLIT_KEYS`, where recorded), before anything is trained on it."""
    path = Path(folder) / STATS_FILE
    stats = read_json(path)
    recorded = {key: stats[key] for key in SPLIT_KEYS if key in stats}
    expected = {key: getattr(split, key) for key in recorded}
    if recorded != expected:
        raise ArtifactError(
            f"{path} records another split ({recorded}) than --split {split.name!r} ({expected}); "
            f"pass the folder the `{MADE_BY}` stage made for {split.name!r} (data/prepared/{split.name})"
        )


def temporal_weights(rank: sp.csr_matrix, w_min: float, w_max: float) -> sp.csr_matrix:
    """T-DiffRec's time-aware row: linspace(w_min, w_max, n_u) along each user's time order.

    The oldest train interaction gets w_min, the newest w_max (a single one gets w_min, as
    ``np.linspace(w_min, w_max, 1)`` does).
    """
    out = rank.copy().astype(np.float32)
    counts = np.diff(rank.indptr)
    for u in range(rank.shape[0]):
        lo, hi = rank.indptr[u], rank.indptr[u + 1]
        if counts[u] == 0:
            continue
        positions = rank.data[lo:hi].astype(np.int64) - 1
        out.data[lo:hi] = np.linspace(w_min, w_max, counts[u], dtype=np.float64)[positions].astype(np.float32)
    return out


def dense_rows(matrix: sp.csr_matrix, rows: np.ndarray) -> torch.Tensor:
    """Rows of a CSR matrix as a dense float32 tensor (one batch, never the whole matrix)."""
    return torch.from_numpy(matrix[rows].toarray())


def positive_entries(matrix: sp.csr_matrix, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(position in ``rows``, column) of every entry > 0 of ``matrix[rows]``, duplicates summed:
    where ``dense_rows(matrix, rows) > 0``, read from the CSR entries directly."""
    sub = matrix[rows]
    sub.sum_duplicates()
    keep = sub.data > 0
    return np.repeat(np.arange(sub.shape[0]), np.diff(sub.indptr))[keep], sub.indices[keep]


def mask_rows(matrix: sp.csr_matrix, rows: np.ndarray) -> torch.Tensor:
    """``dense_rows(matrix, rows) > 0`` as a bool tensor, set from the CSR entries directly
    (a tenth of the time: no float row is made and compared)."""
    out = np.zeros((len(rows), matrix.shape[1]), dtype=bool)
    out[positive_entries(matrix, rows)] = True
    return torch.from_numpy(out)
