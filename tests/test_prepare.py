"""Prepare stage: raw readers, DiffRec's released ML-1M, the raw-ratings protocol, reproducibility,
TV-Diff's given splits (settings carved and authors)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from pipeline.config import ProtocolConfig, SplitConfig
from pipeline.data import COLUMNS
from pipeline.stages.prepare import main, prepare, split_sizes, split_stats, unseen_stats
from pipeline.stages.prepare import CANONICAL_SCHEMA, carve_key, carve_size
from pipeline.data.readers import GIVEN_SCHEMA, RAW_SCHEMA, RawDataError, read_movielens_dat, read_recbole
from pipeline.data.readers import read_tvdiff_count, read_tvdiff_time

PROTOCOL = ProtocolConfig(
    rating_threshold=4, k_core=10, ratios=(0.7, 0.2, 0.1), rounding="diffrec", noisy_max_fraction=1.0
)
# The hand-made table below is tiny: 3-core, 60/20/20 with floor rounding (5 positives -> 3/1/1).
TINY = ProtocolConfig(rating_threshold=4, k_core=3, ratios=(0.6, 0.2, 0.2), rounding="floor", noisy_max_fraction=1.0)


def _split(setting: str, fmt: str, dataset: str = "tiny") -> SplitConfig:
    return SplitConfig(name=f"{dataset}_{setting}", dataset=dataset, setting=setting, source="test", format=fmt)


def _read(out: Path) -> pl.DataFrame:
    return pl.read_parquet(out / "interactions.parquet")


def _check_canonical(table: pl.DataFrame) -> None:
    """Columns and types of the canonical table; sorted by (user, order); order = 0..n-1 per user."""
    assert tuple(table.columns) == COLUMNS
    assert table.schema == pl.Schema(CANONICAL_SCHEMA)
    assert table.equals(table.sort("user", "order"))
    expected = table.select(pl.int_range(pl.len(), dtype=pl.Int32).over("user").alias("order"))["order"]
    assert table["order"].equals(expected)
    assert set(table["split"].unique()) <= {"train", "valid", "test"}


# --------------------------------------------------------------------------------------------
# DiffRec's released ML-1M

RELEASE_COUNTS = {
    "clean": dict(n_train=403_277, n_valid=110_722, n_test=57_532, n_users=5_949, n_items=2_810),
    "noisy": dict(n_train=429_993, n_valid=130_772, n_test=57_532, n_users=5_949, n_items=3_494),
}


@pytest.mark.parametrize("setting", ["clean", "noisy", "temporal"])
def test_diffrec_ml1m_release_counts(diffrec_ml1m, tmp_path, setting):
    folder = diffrec_ml1m("noisy" if setting == "noisy" else "clean")
    stats = prepare(_split(setting, "diffrec", "ml-1m"), PROTOCOL, folder, tmp_path)
    expected = RELEASE_COUNTS["noisy" if setting == "noisy" else "clean"]
    assert {k: stats[k] for k in expected} == expected
    assert stats["n_interactions"] == expected["n_train"] + expected["n_valid"] + expected["n_test"]
    assert stats["train_users"] == stats["valid_users"] == stats["test_users"] == 5_949
    table = _read(tmp_path)
    _check_canonical(table)
    assert table["timestamp"].null_count() == table["rating"].null_count() == table.height
    # within a user: train rows, then valid, then test, in release (time) order
    rank = table["split"].replace_strict({"train": 0, "valid": 1, "test": 2}, return_dtype=pl.Int8)
    assert table.with_columns(rank=rank).select((pl.col("rank").diff().over("user").fill_null(0) >= 0).all()).item()


def test_diffrec_ml1m_order_matches_release_files(diffrec_ml1m, tmp_path):
    folder = diffrec_ml1m("clean")
    prepare(_split("temporal", "diffrec", "ml-1m"), PROTOCOL, folder, tmp_path)
    table = _read(tmp_path)
    train = np.load(next(folder.rglob("train_list.npy")))
    rows = table.filter(pl.col("split") == "train").select("user", "item").to_numpy()
    np.testing.assert_array_equal(rows, train)


def test_diffrec_split_rule_reproduces_ml1m_release(diffrec_ml1m, tmp_path):
    """DiffRec's ML-1M files follow n_train = int(0.7 n) + 1, n_valid = ceil(0.2 n) - 1 (in float) for every user."""
    prepare(_split("clean", "diffrec", "ml-1m"), PROTOCOL, diffrec_ml1m("clean"), tmp_path)
    per_user = _read(tmp_path).group_by("user").agg(
        n=pl.len(), train=(pl.col("split") == "train").sum(), valid=(pl.col("split") == "valid").sum()
    )
    assert per_user.height == 5_949
    for n, train, valid in per_user.select("n", "train", "valid").iter_rows():
        assert split_sizes(n, (0.7, 0.2, 0.1), "diffrec")[:2] == (train, valid)


def test_diffrec_bad_array(tmp_path):
    for split in ("train", "valid", "test"):
        np.save(tmp_path / f"{split}_list.npy", np.zeros((3, 2), dtype=np.int64))
    np.save(tmp_path / "valid_list.npy", np.zeros((3, 3), dtype=np.int64))
    with pytest.raises(RawDataError, match=r"valid_list\.npy.*shape"):
        prepare(_split("clean", "diffrec"), PROTOCOL, tmp_path, tmp_path / "out")


# --------------------------------------------------------------------------------------------
# split sizes


def test_split_sizes():
    ratios = (0.7, 0.2, 0.1)
    assert split_sizes(10, ratios, "diffrec") == (8, 1, 1)
    assert split_sizes(10, ratios, "floor") == (7, 2, 1)
    # 0.7 * 90 = 62.99999999999999 in floating point: "floor" is epsilon-safe and counts 63;
    # "diffrec" keeps DiffRec's float artefact, int(62.99...) + 1 = 63 (as in the ML-1M release)
    assert split_sizes(90, ratios, "floor") == (63, 18, 9)
    assert split_sizes(90, ratios, "diffrec") == (63, 17, 10)
    # small-n guard: never negative, at least one training row
    assert split_sizes(1, ratios, "floor") == (1, 0, 0)
    assert split_sizes(1, ratios, "diffrec") == (1, 0, 0)
    assert split_sizes(2, ratios, "diffrec") == (2, 0, 0)
    for n in range(1, 200):
        for rounding in ("diffrec", "floor"):
            train, valid, test = split_sizes(n, ratios, rounding)
            assert train >= 1 and valid >= 0 and test >= 0 and train + valid + test == n


# --------------------------------------------------------------------------------------------
# a tiny hand-made raw table
#
# (user, item, rating, timestamp), in file order. Users 1, 2, 3, 12 keep 5 positives each;
# user 4 has 2 positives (k-core removes it, and item 99, positive only for user 4);
# user 6 has no positive (threshold removes it); user 1 rated item 10 twice (the later, 5, wins).
RAW = [
    ("1", "10", 5.0, 50), ("1", "11", 4.0, 10), ("1", "13", 5.0, 20), ("1", "12", 5.0, 30),
    ("1", "14", 5.0, 40), ("1", "15", 2.0, 25), ("1", "10", 1.0, 5),
    ("2", "10", 5.0, 10), ("2", "11", 5.0, 20), ("2", "12", 4.0, 30), ("2", "15", 5.0, 40),
    ("2", "13", 5.0, 50), ("2", "14", 3.5, 35),
    ("3", "12", 5.0, 10), ("3", "15", 4.0, 20), ("3", "10", 5.0, 20), ("3", "14", 5.0, 30),
    ("3", "11", 5.0, 40), ("3", "13", 1.0, 60), ("3", "99", 1.0, 5),
    ("4", "10", 5.0, 10), ("4", "99", 5.0, 20),
    ("12", "13", 5.0, 10), ("12", "14", 4.0, 20), ("12", "15", 5.0, 30), ("12", "10", 5.0, 40),
    ("12", "11", 5.0, 50), ("12", "12", 3.0, 5),
    ("6", "10", 1.0, 10), ("6", "11", 2.0, 20),
]
# users 1, 2, 3, 12 -> 0, 1, 2, 3 (numeric order); items 10..15 -> 0..5
CLEAN = [  # (user, item, split, order, timestamp, rating)
    (0, 1, "train", 0, 10, 4.0), (0, 3, "train", 1, 20, 5.0), (0, 2, "train", 2, 30, 5.0),
    (0, 4, "valid", 3, 40, 5.0), (0, 0, "test", 4, 50, 5.0),
    (1, 0, "train", 0, 10, 5.0), (1, 1, "train", 1, 20, 5.0), (1, 2, "train", 2, 30, 4.0),
    (1, 5, "valid", 3, 40, 5.0), (1, 3, "test", 4, 50, 5.0),
    # user 3: items 10 and 15 share timestamp 20; the raw item id breaks the tie
    (2, 2, "train", 0, 10, 5.0), (2, 0, "train", 1, 20, 5.0), (2, 5, "train", 2, 20, 4.0),
    (2, 4, "valid", 3, 30, 5.0), (2, 1, "test", 4, 40, 5.0),
    (3, 3, "train", 0, 10, 5.0), (3, 4, "train", 1, 20, 4.0), (3, 5, "train", 2, 30, 5.0),
    (3, 0, "valid", 3, 40, 5.0), (3, 1, "test", 4, 50, 5.0),
]
# noise: (1, 15, 2.0, t25) -> train (<= last train 30); (2, 14, 3.5, t35) -> valid (30 < 35 <= 40);
# (12, 12, 3.0, t5) -> train; (3, 13, 1.0, t60) is after user 3's last valid (30): dropped;
# (3, 99) is not a candidate (item 99 is gone), nor are user 6's (user gone).
NOISE = [(0, 5, "train", 25, 2.0), (1, 4, "valid", 35, 3.5), (3, 2, "train", 5, 3.0)]


def _write_inter(folder: Path, rows=RAW) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
    lines += [f"{u}\t{i}\t{r}\t{t}" for u, i, r, t in rows]
    path = folder / "tiny.inter"
    path.write_text("\n".join(lines) + "\n")
    return path


def _write_dat(folder: Path, rows=RAW) -> Path:
    path = folder / "ml-1m" / "ratings.dat"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{u}::{i}::{int(r) if r == int(r) else r}::{t}\n" for u, i, r, t in rows))
    return path


def _frame(rows) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=CANONICAL_SCHEMA, orient="row")


def test_readers_parse_tiny_table(tmp_path):
    _write_inter(tmp_path / "recbole")
    _write_dat(tmp_path / "dat")
    expected = pl.DataFrame(RAW, schema=RAW_SCHEMA, orient="row")
    assert read_recbole(tmp_path / "recbole").equals(expected)
    assert read_movielens_dat(tmp_path / "dat").equals(expected)


def test_recbole_columns_by_header_name(tmp_path):
    (tmp_path / "x.inter").write_text("timestamp:float\tuser_id:token\tlabel:float\titem_id:token\n7.9\tu\t1\ti\n")
    df = read_recbole(tmp_path)
    assert df.row(0) == ("u", "i", None, 7)


@pytest.mark.parametrize("fmt", ["recbole", "movielens-dat"])
def test_tiny_clean_and_temporal(tmp_path, fmt):
    (_write_inter if fmt == "recbole" else _write_dat)(tmp_path / "raw")
    stats = prepare(_split("clean", fmt), TINY, tmp_path / "raw", tmp_path / "clean")
    clean = _read(tmp_path / "clean")
    _check_canonical(clean)
    assert clean.equals(_frame(CLEAN))
    assert stats == {
        "dataset": "tiny", "setting": "clean", "format": fmt,
        "n_users": 4, "n_items": 6, "n_interactions": 20, "density": 20 / 24,
        "n_train": 12, "n_valid": 4, "n_test": 4, "train_users": 4, "valid_users": 4, "test_users": 4,
        "valid_items_unseen_in_train": 0, "test_items_unseen_in_train": 0,
        "raw_interactions": 30, "raw_users": 6, "raw_items": 7, "duplicates_removed": 1,
        "threshold_removed_interactions": 7, "threshold_removed_users": 1, "threshold_removed_items": 0,
        "kcore_removed_interactions": 2, "kcore_removed_users": 1, "kcore_removed_items": 1, "kcore_rounds": 1,
        "split_clamped_users": 0,
        "valid_users_unseen_in_train": 0, "test_users_unseen_in_train": 0,
        "valid_items_unseen_in_train_distinct": 0, "test_items_unseen_in_train_distinct": 0,
        "unseen_in_train_handling": "kept",
    }
    temporal_stats = prepare(_split("temporal", fmt), TINY, tmp_path / "raw", tmp_path / "temporal")
    assert _read(tmp_path / "temporal").equals(clean)
    assert temporal_stats == {**stats, "setting": "temporal"}


def test_tiny_threshold_is_inclusive(tmp_path):
    # rating exactly 4 is a positive (user 1's item 11); 3.5 is not (user 2's item 14)
    _write_inter(tmp_path / "raw")
    prepare(_split("clean", "recbole"), TINY, tmp_path / "raw", tmp_path / "out")
    clean = _read(tmp_path / "out")
    assert clean.filter((pl.col("user") == 0) & (pl.col("item") == 1)).height == 1
    assert clean.filter((pl.col("user") == 1) & (pl.col("item") == 4)).height == 0
    assert clean["rating"].min() >= 4


def test_tiny_noisy(tmp_path):
    _write_inter(tmp_path / "raw")
    stats = prepare(_split("noisy", "recbole"), TINY, tmp_path / "raw", tmp_path / "noisy")
    noisy = _read(tmp_path / "noisy")
    _check_canonical(noisy)
    clean = _frame(CLEAN)
    noise = pl.DataFrame(NOISE, schema=["user", "item", "split", "timestamp", "rating"], orient="row")
    expected = (
        pl.concat([clean.drop("order"), noise.select(clean.drop("order").columns).cast(clean.drop("order").schema)])
        .sort("user", "timestamp", "item")
        .with_columns(order=pl.int_range(pl.len(), dtype=pl.Int32).over("user"))
        .select(COLUMNS)
    )
    assert noisy.equals(expected)
    # user 0: 11@10, 13@20, noise 15@25, 12@30, 14@40 (valid), 10@50 (test)
    assert noisy.filter(pl.col("user") == 0)["item"].to_list() == [1, 3, 5, 2, 4, 0]
    test_rows = [t.filter(pl.col("split") == "test").drop("order") for t in (noisy, clean)]
    assert test_rows[0].equals(test_rows[1])
    assert stats["noise_candidates"] == 4
    assert (stats["noise_added_train"], stats["noise_added_valid"]) == (2, 1)
    assert (stats["noise_dropped_after_valid"], stats["noise_dropped_by_fraction"]) == (1, 0)
    assert (stats["n_train"], stats["n_valid"], stats["n_test"]) == (14, 5, 4)
    assert (stats["n_users"], stats["n_items"]) == (4, 6)


def test_tiny_noisy_fraction(tmp_path):
    _write_inter(tmp_path / "raw")
    protocol = ProtocolConfig(**{**TINY.__dict__, "noisy_max_fraction": 0.5})
    stats = prepare(_split("noisy", "recbole"), protocol, tmp_path / "raw", tmp_path / "noisy")
    # eligible, sorted by (user, timestamp, item): (0, 5), (1, 4), (3, 2); f = 0.5 keeps i = 1 only
    noisy = _read(tmp_path / "noisy")
    added = noisy.join(_frame(CLEAN).select("user", "item"), on=["user", "item"], how="anti")
    assert added.select("user", "item", "split").rows() == [(1, 4, "valid")]
    assert (stats["noise_added_train"], stats["noise_added_valid"], stats["noise_dropped_by_fraction"]) == (0, 1, 2)


# --------------------------------------------------------------------------------------------
# the real ML-100K file, end to end


@pytest.fixture(scope="module")
def ml100k(tmp_path_factory, mirror):
    ml100k_raw = mirror / "recbole" / "ml-100k"
    if not (ml100k_raw / "ml-100k.inter").is_file():
        pytest.skip(f"{ml100k_raw}/ml-100k.inter not available")
    out = tmp_path_factory.mktemp("ml-100k")
    stats = {
        setting: prepare(_split(setting, "recbole", "ml-100k"), PROTOCOL, ml100k_raw, out / setting)
        for setting in ("clean", "noisy", "temporal")
    }
    for setting, s in stats.items():
        print(f"ml-100k {setting}: {s}")
    return {setting: (_read(out / setting), stats[setting]) for setting in stats}


def test_ml100k_invariants(ml100k):
    clean, cstats = ml100k["clean"]
    noisy, nstats = ml100k["noisy"]
    temporal, tstats = ml100k["temporal"]
    for table in (clean, noisy, temporal):
        _check_canonical(table)
    assert cstats["raw_interactions"] == 100_000
    assert temporal.equals(clean)
    # every user has train and test rows; ids are contiguous
    for table, stats in ((clean, cstats), (noisy, nstats)):
        assert stats["train_users"] == stats["test_users"] == stats["n_users"]
        assert table["user"].n_unique() == stats["n_users"] == table["user"].max() + 1
        assert table["item"].max() < stats["n_items"]
    assert clean["item"].n_unique() == cstats["n_items"]
    assert (nstats["n_users"], nstats["n_items"]) == (cstats["n_users"], cstats["n_items"])
    # clean: only positives, 10-core
    assert clean["rating"].min() >= 4
    assert clean.group_by("user").len()["len"].min() >= 10
    assert clean.group_by("item").len()["len"].min() >= 10
    # test is untouched by noise; clean rows keep their split in noisy; noise ratings are < 4
    test_cols = ["user", "item", "timestamp", "rating"]
    test_rows = [t.filter(pl.col("split") == "test").select(test_cols) for t in (noisy, clean)]
    assert test_rows[0].equals(test_rows[1])
    kept = clean.drop("order").join(noisy.drop("order"), on=clean.drop("order").columns, how="semi")
    assert kept.height == clean.height
    added = noisy.join(clean.select("user", "item"), on=["user", "item"], how="anti")
    assert added.height == nstats["noise_added_train"] + nstats["noise_added_valid"] > 0
    assert added["rating"].max() < 4 and set(added["split"]) == {"train", "valid"}
    # chronological per user: train <= valid <= test timestamps
    for table in (clean, noisy):
        per_user = table.group_by("user").agg(
            *[pl.col("timestamp").filter(pl.col("split") == s).max().alias(f"max_{s}") for s in ("train", "valid")],
            *[pl.col("timestamp").filter(pl.col("split") == s).min().alias(f"min_{s}") for s in ("valid", "test")],
        )
        assert per_user.filter(pl.col("max_train") > pl.col("min_test")).height == 0
        assert per_user.filter(pl.col("max_train") > pl.col("min_valid")).height == 0
        assert per_user.filter(pl.col("max_valid") > pl.col("min_test")).height == 0


# --------------------------------------------------------------------------------------------
# malformed raw input


def test_malformed_wrong_column_count(tmp_path):
    path = tmp_path / "ratings.dat"
    path.write_text("1::10::5::100\n1::11::4::101\n1::12::5\n")
    with pytest.raises(RawDataError) as err:
        read_movielens_dat(tmp_path)
    assert str(path) in str(err.value) and "line 3" in str(err.value)


def test_malformed_non_numeric_rating(tmp_path):
    path = tmp_path / "x.inter"
    header = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
    path.write_text(header + "1\t2\t5\t100\n1\t3\t4\t101\n1\t4\tgood\t102\n")
    with pytest.raises(RawDataError) as err:
        read_recbole(tmp_path)
    assert str(path) in str(err.value) and "line 4" in str(err.value) and "rating" in str(err.value)


def test_malformed_non_numeric_timestamp(tmp_path):
    path = tmp_path / "u.data"
    path.write_text("1\t2\t5\t100\n1\t3\t4\tyesterday\n")
    with pytest.raises(RawDataError) as err:
        read_movielens_dat(tmp_path)
    assert str(path) in str(err.value) and "line 2" in str(err.value) and "timestamp" in str(err.value)


@pytest.mark.parametrize("name", ["ratings.dat", "x.inter"])
def test_malformed_empty_file(tmp_path, name):
    path = tmp_path / name
    path.write_text("")
    reader = read_recbole if name.endswith(".inter") else read_movielens_dat
    with pytest.raises(RawDataError) as err:
        reader(tmp_path)
    assert str(path) in str(err.value) and "line 1" in str(err.value) and "empty" in str(err.value)


def test_recbole_header_only(tmp_path):
    path = tmp_path / "x.inter"
    path.write_text("user_id:token\titem_id:token\n")
    with pytest.raises(RawDataError, match="line 2"):
        read_recbole(tmp_path)


# --------------------------------------------------------------------------------------------
# reproducibility and the stage entry point


@pytest.mark.parametrize("setting", ["clean", "noisy"])
def test_byte_reproducible(tmp_path, setting, mirror):
    ml100k_raw = mirror / "recbole" / "ml-100k"
    raw = ml100k_raw if (ml100k_raw / "ml-100k.inter").is_file() else _write_inter(tmp_path / "raw").parent
    for run in ("a", "b"):
        prepare(_split(setting, "recbole"), PROTOCOL if raw == ml100k_raw else TINY, raw, tmp_path / run)
    for name in ("interactions.parquet", "stats.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_main(tmp_path, capsys):
    _write_inter(tmp_path / "raw")
    params = {
        "protocol": {**TINY.__dict__, "ratios": list(TINY.ratios)},
        "splits": {"tiny_clean": {"dataset": "tiny", "setting": "clean", "source": "s", "format": "recbole"}},
    }
    stats = main(params, "tiny_clean", str(tmp_path / "raw"), str(tmp_path / "out"))
    assert stats["n_interactions"] == 20
    assert (tmp_path / "out" / "interactions.parquet").is_file() and (tmp_path / "out" / "stats.json").is_file()
    assert "tiny_clean" in capsys.readouterr().out


def test_split_stats_unseen_items():
    table = pl.DataFrame({"user": [0, 0, 1, 1], "item": [0, 1, 0, 2], "split": ["train", "valid", "train", "test"]})
    stats = split_stats(table, n_users=2, n_items=4)
    assert (stats["valid_items_unseen_in_train"], stats["test_items_unseen_in_train"]) == (1, 1)
    assert (stats["train_users"], stats["valid_users"], stats["test_users"]) == (2, 1, 1)
    assert stats["density"] == 4 / 8


# --------------------------------------------------------------------------------------------
# users and items of valid/test that never occur in train

UNSEEN_KEYS = [
    "valid_users_unseen_in_train", "test_users_unseen_in_train",
    "valid_items_unseen_in_train_distinct", "test_items_unseen_in_train_distinct", "unseen_in_train_handling",
]
# the keys stats.json had before these were added, in their order (raw formats)
OLD_KEYS = [
    "dataset", "setting", "format", "n_users", "n_items", "n_interactions",
    "n_train", "train_users", "n_valid", "valid_users", "valid_items_unseen_in_train",
    "n_test", "test_users", "test_items_unseen_in_train", "density",
    "raw_interactions", "raw_users", "raw_items", "duplicates_removed",
    "threshold_removed_interactions", "threshold_removed_users", "threshold_removed_items",
    "kcore_removed_interactions", "kcore_removed_users", "kcore_removed_items", "kcore_rounds",
    "split_clamped_users",
]


def test_unseen_users_and_items_counted_and_kept(tmp_path):
    """User 2 has test rows but no train row; items 2 and 3 never occur in train (DiffRec format: kept as is)."""
    train = [(0, 0), (0, 1), (1, 0)]
    valid = [(0, 2), (1, 2), (1, 3)]  # item 2 twice, item 3 once: 3 unseen rows, 2 distinct items
    test = [(0, 3), (2, 3), (2, 0)]  # item 3 twice: 2 unseen rows, 1 distinct item; user 2 unseen
    for name, rows in (("train", train), ("valid", valid), ("test", test)):
        np.save(tmp_path / f"{name}_list.npy", np.array(rows, dtype=np.int64))
    stats = prepare(_split("clean", "diffrec"), PROTOCOL, tmp_path, tmp_path / "out")
    assert (stats["valid_items_unseen_in_train"], stats["test_items_unseen_in_train"]) == (3, 2)  # rows
    assert (stats["valid_items_unseen_in_train_distinct"], stats["test_items_unseen_in_train_distinct"]) == (2, 1)
    assert (stats["valid_users_unseen_in_train"], stats["test_users_unseen_in_train"]) == (0, 1)
    assert stats["unseen_in_train_handling"] == "kept"
    # kept: every row is still there, in its split
    table = _read(tmp_path / "out")
    assert table.height == 9 and table.filter(pl.col("user") == 2)["split"].to_list() == ["test", "test"]
    # new keys come last; the keys that were there keep their order
    assert list(stats)[-len(UNSEEN_KEYS):] == UNSEEN_KEYS
    assert unseen_stats(table) == {k: stats[k] for k in UNSEEN_KEYS}


def test_stats_key_order_unchanged(tmp_path):
    _write_inter(tmp_path / "raw")
    stats = prepare(_split("clean", "recbole"), TINY, tmp_path / "raw", tmp_path / "out")
    assert list(stats) == OLD_KEYS + UNSEEN_KEYS
    assert json.loads((tmp_path / "out" / "stats.json").read_text()) == stats


# --------------------------------------------------------------------------------------------
# TV-Diff's given train/test split (formats tvdiff-count / tvdiff-time, settings carved / authors)

# (user, item, value) of train.txt (CRLF) and test.txt (LF). User 1 has 5 train rows, user 2 two
# (fewer than valid_min_train), user 10 seven; user 3 and items 107, 108 are only in test.
GIVEN_TRAIN = [
    ("1", "100", 5), ("1", "101", 3), ("1", "102", 7), ("1", "103", 1), ("1", "104", 2),
    ("2", "100", 4), ("2", "105", 6),
    ("10", "101", 1), ("10", "102", 2), ("10", "103", 3), ("10", "104", 4), ("10", "105", 5), ("10", "100", 9),
    ("10", "106", 8),
]
GIVEN_TEST = [("1", "105", 1), ("2", "101", 2), ("10", "107", 3), ("3", "100", 4), ("3", "108", 5)]
# valid_fraction 0.3, valid_min_train 5: user 1 gives max(1, floor(1.5)) = 1 row, user 10
# floor(2.1) = 2, user 2 none
GIVEN = ProtocolConfig(**{**TINY.__dict__, "valid_fraction": 0.3, "valid_min_train": 5, "valid_seed": 1})


def _write_given(folder: Path, train=GIVEN_TRAIN, test=GIVEN_TEST) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.txt").write_bytes("".join(f"{u}\t{i}\t{v}\r\n" for u, i, v in train).encode())
    (folder / "test.txt").write_bytes("".join(f"{u}\t{i}\t{v}\n" for u, i, v in test).encode())
    return folder


def test_tvdiff_reader_crlf_and_lf(tmp_path):
    _write_given(tmp_path / "raw")
    rows = [(u, i, float(v), None, "train", n) for n, (u, i, v) in enumerate(GIVEN_TRAIN, start=1)]
    rows += [(u, i, float(v), None, "test", n) for n, (u, i, v) in enumerate(GIVEN_TEST, start=1)]
    expected = pl.DataFrame(rows, schema=GIVEN_SCHEMA, orient="row")
    assert read_tvdiff_count(tmp_path / "raw").equals(expected)
    # tvdiff-time: the value is unix seconds (no CR left in the last field of a CRLF line)
    timed = read_tvdiff_time(tmp_path / "raw")
    assert timed["timestamp"].to_list() == [v for _, _, v in GIVEN_TRAIN + GIVEN_TEST]
    assert timed["rating"].null_count() == timed.height


def test_tvdiff_reader_malformed_line(tmp_path):
    raw = _write_given(tmp_path / "raw")
    (raw / "test.txt").write_bytes(b"1\t105\t1\r\n2\t101\r\n")  # line 2: two fields
    with pytest.raises(RawDataError) as err:
        read_tvdiff_count(raw)
    assert str(raw / "test.txt") in str(err.value) and "line 2" in str(err.value) and "3 fields" in str(err.value)
    (raw / "test.txt").write_bytes(b"1\t105\t1\r\n2\t101\t2\r\n3\t100\tmany\r\n")  # line 3: not a number
    with pytest.raises(RawDataError) as err:
        read_tvdiff_time(raw)
    assert str(raw / "test.txt") in str(err.value) and "line 3" in str(err.value) and "'many'" in str(err.value)
    (raw / "test.txt").unlink()
    with pytest.raises(RawDataError, match="no test.txt"):
        read_tvdiff_count(raw)


# carved, ids: users 1, 2, 3, 10 -> 0..3, items 100..108 -> 0..8 (natural order). Valid: the
# rows with the smallest carve_key (seed 1): user 1 item 104; user 10 items 102 and 100. order:
# train rows, then valid, then test, each in file order (the files have no times).
CARVED = [  # (user, item, split, order, timestamp, rating)
    (0, 0, "train", 0, None, 5.0), (0, 1, "train", 1, None, 3.0), (0, 2, "train", 2, None, 7.0),
    (0, 3, "train", 3, None, 1.0), (0, 4, "valid", 4, None, 2.0), (0, 5, "test", 5, None, 1.0),
    (1, 0, "train", 0, None, 4.0), (1, 5, "train", 1, None, 6.0), (1, 1, "test", 2, None, 2.0),
    (2, 0, "test", 0, None, 4.0), (2, 8, "test", 1, None, 5.0),
    (3, 1, "train", 0, None, 1.0), (3, 3, "train", 1, None, 3.0), (3, 4, "train", 2, None, 4.0),
    (3, 5, "train", 3, None, 5.0), (3, 6, "train", 4, None, 8.0), (3, 2, "valid", 5, None, 2.0),
    (3, 0, "valid", 6, None, 9.0), (3, 7, "test", 7, None, 3.0),
]


def test_tvdiff_carved(tmp_path):
    _write_given(tmp_path / "raw")
    stats = prepare(_split("carved", "tvdiff-count"), GIVEN, tmp_path / "raw", tmp_path / "a")
    table = _read(tmp_path / "a")
    _check_canonical(table)
    assert table.equals(_frame(CARVED))
    # the rule, independently: the smallest keys of each user's train rows
    for user, n_valid in (("1", 1), ("10", 2)):
        items = sorted((i for u, i, _ in GIVEN_TRAIN if u == user), key=lambda i: carve_key(1, user, i))
        assert sorted(items[:n_valid]) == sorted({"1": ["104"], "10": ["100", "102"]}[user])
    assert [carve_size(n, 0.3, 5) for n in (2, 4, 5, 7, 10, 100)] == [0, 0, 1, 2, 3, 30]
    assert carve_size(10, 0.7, 5) == 7  # 0.7 * 10 = 7.000000000000001 in floating point: still 7
    assert stats == {
        "dataset": "tiny", "setting": "carved", "format": "tvdiff-count",
        "n_users": 4, "n_items": 9, "n_interactions": 19,
        "n_train": 11, "train_users": 3, "n_valid": 3, "valid_users": 2, "valid_items_unseen_in_train": 0,
        "n_test": 5, "test_users": 4, "test_items_unseen_in_train": 2, "density": 19 / 36,
        "given_train": 14, "given_train_users": 3, "given_train_items": 7,
        "given_test": 5, "given_test_users": 4, "given_test_items": 5,
        "valid_fraction": 0.3, "valid_min_train": 5, "valid_seed": 1, "valid_carved_users": 2, "valid_skipped_users": 1,
        "selected_on": "valid", "selection": "validation carved from the given train part", "valid_is_test": False,
        "valid_users_unseen_in_train": 0, "test_users_unseen_in_train": 1,
        "valid_items_unseen_in_train_distinct": 0, "test_items_unseen_in_train_distinct": 2,
        "unseen_in_train_handling": "kept",
    }
    # deterministic: the same seed writes the same bytes; the test part is the given test file
    prepare(_split("carved", "tvdiff-count"), GIVEN, tmp_path / "raw", tmp_path / "b")
    for name in ("interactions.parquet", "stats.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    # another seed carves other rows (user 1: item 100; user 10: items 102 and 104), same sizes
    other = ProtocolConfig(**{**GIVEN.__dict__, "valid_seed": 2})
    prepare(_split("carved", "tvdiff-count"), other, tmp_path / "raw", tmp_path / "c")
    valid = _read(tmp_path / "c").filter(pl.col("split") == "valid").select("user", "item").rows()
    assert valid == [(0, 0), (3, 2), (3, 4)]
    tests = [_read(tmp_path / f).filter(pl.col("split") == "test").drop("order") for f in ("a", "c")]
    assert tests[0].equals(tests[1]) and tests[0].height == len(GIVEN_TEST)


def test_tvdiff_authors(tmp_path):
    _write_given(tmp_path / "raw")
    stats = prepare(_split("authors", "tvdiff-count"), GIVEN, tmp_path / "raw", tmp_path / "out")
    table = _read(tmp_path / "out")
    _check_canonical(table)
    # dropped: (10, 107) item not in train; (3, 100) user not in train; (3, 108) neither.
    # ids over the rows kept: users 1, 2, 10 -> 0..2, items 100..106 -> 0..6
    assert table.filter(pl.col("split") == "test").select("user", "item").rows() == [(0, 5), (1, 1)]
    valid, test = (table.filter(pl.col("split") == s).drop("split", "order") for s in ("valid", "test"))
    assert valid.equals(test)  # the validation part is the test part: selection happens on test
    assert table.filter(pl.col("split") == "train").height == len(GIVEN_TRAIN)
    assert table.filter(pl.col("user") == 0)["split"].to_list() == ["train"] * 5 + ["valid", "test"]
    assert {k: stats[k] for k in stats if k.startswith("test_dropped")} == {
        "test_dropped_rows": 3, "test_dropped_rows_user_not_in_train": 2, "test_dropped_rows_item_not_in_train": 2,
        "test_dropped_users_not_in_train": 1, "test_dropped_items_not_in_train": 2,
    }
    assert (stats["n_users"], stats["n_items"], stats["n_train"], stats["n_valid"], stats["n_test"]) == (3, 7, 14, 2, 2)
    assert (stats["selected_on"], stats["selection"], stats["valid_is_test"]) == (
        "test", "test-selected (authors' protocol)", True)
    assert stats["unseen_in_train_handling"] == "dropped from test (authors' protocol)"
    assert stats["test_users_unseen_in_train"] == stats["test_items_unseen_in_train_distinct"] == 0


def test_tvdiff_time_orders_by_time(tmp_path):
    # tvdiff-time: a user's order follows the times over all parts (ties: train, valid, test, line)
    train, test = [("1", "5", 300), ("1", "6", 100), ("2", "7", 50)], [("1", "7", 200), ("1", "8", 100)]
    _write_given(tmp_path / "raw", train=train, test=test)
    prepare(_split("authors", "tvdiff-time"), GIVEN, tmp_path / "raw", tmp_path / "out")
    table = _read(tmp_path / "out")
    _check_canonical(table)
    # item 8 is not in train: dropped; items 5, 6, 7 -> 0, 1, 2
    assert table.filter(pl.col("user") == 0).select("item", "split", "timestamp").rows() == [
        (1, "train", 100), (2, "valid", 200), (2, "test", 200), (0, "train", 300)]


def test_tvdiff_refuses_duplicates_and_other_settings(tmp_path):
    raw = _write_given(tmp_path / "raw", test=GIVEN_TEST + [("2", "100", 7)])  # (2, 100) is in train, line 6
    with pytest.raises(ValueError, match=r"train.txt line 6, test.txt line 6"):
        prepare(_split("carved", "tvdiff-count"), GIVEN, raw, tmp_path / "out")
    with pytest.raises(ValueError, match="allowed: \\['carved', 'authors'\\]"):
        prepare(_split("clean", "tvdiff-count"), GIVEN, raw, tmp_path / "out")
    with pytest.raises(ValueError, match="allowed: \\['clean', 'noisy', 'temporal'\\]"):
        prepare(_split("carved", "recbole"), GIVEN, raw, tmp_path / "out")
    assert not (tmp_path / "out").exists()
