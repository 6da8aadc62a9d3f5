"""Item clustering (``pipeline.stages.cluster``) and the import of the released item embeddings
(``pipeline.stages.import_embeddings.main``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from pipeline.stages.cluster import canonical_labels, cluster_items, main
from pipeline.stages.import_embeddings import main as import_released

PARAMS = {"clustering": {"n_clusters": 2, "seed": 1, "n_init": 10}}


def blobs(labels: list[int], dims: int = 8, seed: int = 0) -> np.ndarray:
    """One well-separated Gaussian blob per label value (centres 20 apart, noise 0.1)."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    centres = 20.0 * rng.standard_normal((labels.max() + 1, dims))
    return (centres[labels] + 0.1 * rng.standard_normal((len(labels), dims))).astype(np.float32)


def save(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, array)
    return path


def stats(folder: Path, n_items: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "stats.json").write_text(json.dumps({"n_users": 3, "n_items": n_items}))
    return folder


# --------------------------------------------------------------------------------------------


def test_canonical_labels():
    assert canonical_labels(np.array([2, 2, 0, 1, 0])).tolist() == [0, 0, 1, 2, 1]
    assert canonical_labels(np.array([1, 0, 1])).tolist() == [0, 1, 0]


def test_two_blobs_give_the_planted_clusters():
    planted = [1, 0, 0, 1, 1, 0, 1, 0, 0, 0, 1, 1]  # item 0 in blob 1: canonical label 0 is blob 1
    labels = cluster_items(blobs(planted), n_clusters=2, seed=1, n_init=10)
    assert labels.tolist() == [1 - p for p in planted]
    three = [2, 2, 0, 1, 0, 1, 2, 0]
    assert cluster_items(blobs(three, seed=3), 3, seed=5, n_init=4).tolist() == canonical_labels(np.array(three)).tolist()


def test_same_seed_same_bytes(tmp_path, capsys):
    emb = save(tmp_path / "item_emb.npy", blobs([0, 1] * 15, seed=1))
    first = main(PARAMS, "tiny_clean", str(emb), str(tmp_path / "a"))
    main(PARAMS, "tiny_clean", str(emb), str(tmp_path / "b"))
    assert "sizes [15, 15]" in capsys.readouterr().out
    for name in ("clusters.parquet", "sizes.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    table = pl.read_parquet(tmp_path / "a" / "clusters.parquet")
    assert table.schema == pl.Schema({"item": pl.Int32, "cluster": pl.Int32})
    assert table["item"].to_list() == list(range(30))
    assert table["cluster"].to_list() == [0, 1] * 15
    sizes = json.loads((tmp_path / "a" / "sizes.json").read_text())
    assert sizes == first and sizes["n_clusters"] == 2 and sizes["sizes"] == [15, 15]
    assert 0 < sizes["inertia"] == round(sizes["inertia"], 6)
    assert not list((tmp_path / "a").glob(".*.tmp"))


def test_bad_cluster_counts():
    emb = blobs([0, 1, 0])
    with pytest.raises(ValueError, match=r"n_clusters = 4 is more than the number of items \(3\)"):
        cluster_items(emb, 4, seed=1, n_init=1)
    with pytest.raises(ValueError, match="n_clusters must be an integer >= 1"):
        cluster_items(emb, 0, seed=1, n_init=1)
    with pytest.raises(ValueError, match="only 1 non-empty clusters"):
        cluster_items(np.zeros((5, 2)), 2, seed=1, n_init=1)  # identical points


def test_import_released(tmp_path):
    data_dir = stats(tmp_path / "data", n_items=6)
    emb = np.arange(24, dtype=np.float64).reshape(6, 4)
    save(tmp_path / "raw" / "ml-1m_clean" / "item_emb.npy", emb)
    import_released(str(tmp_path / "raw"), str(data_dir), str(tmp_path / "out"))
    out = np.load(tmp_path / "out" / "item_emb.npy")
    assert out.dtype == np.float32 and np.array_equal(out, emb.astype(np.float32))


def test_import_released_errors(tmp_path):
    data_dir = stats(tmp_path / "data", n_items=6)
    raw = tmp_path / "raw"
    raw.mkdir()
    with pytest.raises(FileNotFoundError, match="no item_emb.npy under"):
        import_released(str(raw), str(data_dir), str(tmp_path / "out"))
    save(raw / "a" / "item_emb.npy", np.zeros((5, 4), dtype=np.float32))
    with pytest.raises(ValueError, match=r"has 5 rows but the prepared split .* has 6 items"):
        import_released(str(raw), str(data_dir), str(tmp_path / "out"))
    save(raw / "b" / "item_emb.npy", np.zeros((6, 4), dtype=np.float32))
    with pytest.raises(ValueError, match="several item_emb.npy"):
        import_released(str(raw), str(data_dir), str(tmp_path / "out"))
    (raw / "a" / "item_emb.npy").unlink()
    save(raw / "b" / "item_emb.npy", np.zeros((6,), dtype=np.float32))
    with pytest.raises(ValueError, match="expected a 2-D float array"):
        import_released(str(raw), str(data_dir), str(tmp_path / "out"))
    save(raw / "b" / "item_emb.npy", np.zeros((6, 4), dtype=np.int64))
    with pytest.raises(ValueError, match="expected a 2-D float array"):
        import_released(str(raw), str(data_dir), str(tmp_path / "out"))
    assert not (tmp_path / "out" / "item_emb.npy").exists()


def test_released_ml1m_embeddings(diffrec_ml1m, tmp_path, capsys):
    raw = diffrec_ml1m("clean")  # skipped when the archive is absent
    data_dir = stats(tmp_path / "data", n_items=2810)
    import_released(str(raw), str(data_dir), str(tmp_path / "emb"))
    emb = np.load(tmp_path / "emb" / "item_emb.npy")
    assert emb.shape == (2810, 64) and emb.dtype == np.float32
    summary = main(PARAMS, "ml-1m_clean", str(tmp_path / "emb" / "item_emb.npy"), str(tmp_path / "clusters"))
    print(capsys.readouterr().out)
    assert summary["n_clusters"] == 2 and sum(summary["sizes"]) == 2810 and min(summary["sizes"]) > 0
    table = pl.read_parquet(tmp_path / "clusters" / "clusters.parquet")
    assert table["cluster"][0] == 0 and table["cluster"].value_counts().height == 2
