"""Readers for the large raw formats (Yelp reviews, Amazon ratings CSV and review JSON lines).

Small files written in exactly the upstream formats go through prepare; the expected canonical
tables are the hand-checked ones of tests/test_prepare.py (same interactions) with the string
ids numbered in sorted byte order.
"""

from __future__ import annotations

import copy
import gzip
import json
from datetime import datetime, timezone
from pathlib import Path

import polars as pl
import pytest
import yaml

import pipeline.data.readers as readers
from pipeline.config import ConfigError, ProtocolConfig, SplitConfig, check_schema, check_semantics
from pipeline.data import COLUMNS
from pipeline.stages.prepare import CANONICAL_SCHEMA, prepare
from pipeline.data.readers import RAW_SCHEMA, READERS, RawDataError, read_amazon_csv, read_amazon_json, read_yelp_json

ROOT = Path(__file__).resolve().parents[1]
TINY = ProtocolConfig(rating_threshold=4, k_core=3, ratios=(0.6, 0.2, 0.2), rounding="floor", noisy_max_fraction=1.0)

# (user, item, rating, t) in file order: the table of tests/test_prepare.py (user "1" rated "10"
# twice: the later 5 wins; users "4" and "6" and item "99" are filtered out) with integer stars
# (3.5 -> 3) and one exact duplicate line (user "2", item "10"), as the Amazon files have.
RAW = [
    ("1", "10", 5.0, 50), ("1", "11", 4.0, 10), ("1", "13", 5.0, 20), ("1", "12", 5.0, 30),
    ("1", "14", 5.0, 40), ("1", "15", 2.0, 25), ("1", "10", 1.0, 5),
    ("2", "10", 5.0, 10), ("2", "10", 5.0, 10), ("2", "11", 5.0, 20), ("2", "12", 4.0, 30), ("2", "15", 5.0, 40),
    ("2", "13", 5.0, 50), ("2", "14", 3.0, 35),
    ("3", "12", 5.0, 10), ("3", "15", 4.0, 20), ("3", "10", 5.0, 20), ("3", "14", 5.0, 30),
    ("3", "11", 5.0, 40), ("3", "13", 1.0, 60), ("3", "99", 1.0, 5),
    ("4", "10", 5.0, 10), ("4", "99", 5.0, 20),
    ("12", "13", 5.0, 10), ("12", "14", 4.0, 20), ("12", "15", 5.0, 30), ("12", "10", 5.0, 40),
    ("12", "11", 5.0, 50), ("12", "12", 3.0, 5),
    ("6", "10", 1.0, 10), ("6", "11", 2.0, 20),
]
# Realistic ids. Sorted byte order of the surviving ones: users 3 < 2 < 12 < 1, items
# 11 < 10 < 12 < 14 < 13 < 15 (neither the file order nor the numeric order of the keys).
YELP_USERS = {"1": "mh_-eMZ6K5RLWhZyISBhwA", "2": "OyoGAe7OKpv6SyGZT5g77Q", "3": "8g_iMtfSiwikVnbP2etR0A",
              "12": "_7bHUi9Uuf5__HHc_Q8guQ", "4": "bcjbaE6dDog4jkNY91ncLQ", "6": "eUta8W_HdHMXPzLBBZhL1A"}
YELP_ITEMS = {"10": "XQfwVwDr-v0ZS3_CbbE5Xw", "11": "7ATYjTIgM3jUlt4UM3IypQ", "12": "YjUWPpI6HXG530lwP-fb2A",
              "13": "kxX2SOes4o-D3ZQBkiMRfA", "14": "e4Vwtrqf-wpJfwesgvdgxQ", "15": "rNtmQOUe0p3YvkbOX_4jPQ",
              "99": "ZQ2-wYwlBpH1LHGxGjMrjA"}
AMAZON_USERS = {"1": "AZRJH4JFB59VC", "2": "A1EE2E3N7PW666", "3": "A10000012B7CGYKOMPQ4L", "12": "A2SUAM1J3GNN3B",
                "4": "A3OXHLG6DIBRW8", "6": "ATVPDKIKX0DER"}
AMAZON_ITEMS = {"10": "0439023483", "11": "0002005018", "12": "0439064872", "13": "B00005N7P0", "14": "0545010225",
                "15": "B0001DMTQI", "99": "1400079179"}
USER_INDEX = {"3": 0, "2": 1, "12": 2, "1": 3}
ITEM_INDEX = {"11": 0, "10": 1, "12": 2, "14": 3, "13": 4, "15": 5}

# tests/test_prepare.py's CLEAN and NOISE in terms of the keys above: (user, item, split, order, t, rating)
CLEAN = [
    ("1", "11", "train", 0, 10, 4.0), ("1", "13", "train", 1, 20, 5.0), ("1", "12", "train", 2, 30, 5.0),
    ("1", "14", "valid", 3, 40, 5.0), ("1", "10", "test", 4, 50, 5.0),
    ("2", "10", "train", 0, 10, 5.0), ("2", "11", "train", 1, 20, 5.0), ("2", "12", "train", 2, 30, 4.0),
    ("2", "15", "valid", 3, 40, 5.0), ("2", "13", "test", 4, 50, 5.0),
    ("3", "12", "train", 0, 10, 5.0), ("3", "10", "train", 1, 20, 5.0), ("3", "15", "train", 2, 20, 4.0),
    ("3", "14", "valid", 3, 30, 5.0), ("3", "11", "test", 4, 40, 5.0),
    ("12", "13", "train", 0, 10, 5.0), ("12", "14", "train", 1, 20, 4.0), ("12", "15", "train", 2, 30, 5.0),
    ("12", "10", "valid", 3, 40, 5.0), ("12", "11", "test", 4, 50, 5.0),
]
NOISE = [("1", "15", "train", 25, 2.0), ("2", "14", "valid", 35, 3.0), ("12", "12", "train", 5, 3.0)]

YELP_T0 = 1_483_228_800  # 2017-01-01 00:00:00 UTC; t counts hours
AMAZON_T0 = 1_262_304_000  # 2010-01-01 UTC; t counts days (unixReviewTime is a day)


def yelp_time(t: int) -> int:
    return YELP_T0 + 3600 * t


def amazon_time(t: int) -> int:
    return AMAZON_T0 + 86_400 * t


# --------------------------------------------------------------------------------------------
# writing the upstream formats


def yelp_line(k: int, user: str, item: str, stars: float, t: int) -> str:
    return json.dumps({
        "review_id": f"{k:03d}xKq-MNRFJ3Bwsy0W3Aw"[:22], "user_id": YELP_USERS[user], "business_id": YELP_ITEMS[item],
        "stars": int(stars), "useful": k % 3, "funny": 0, "cool": k % 2,
        "text": f"Review {k}: \"great\" tacos,\nslow service \u2014 {'ok' * (k % 4)}",
        "date": datetime.fromtimestamp(yelp_time(t), tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S"),
    })


def amazon_json_line(k: int, user: str, item: str, rating: float, t: int) -> str:
    day = datetime.fromtimestamp(amazon_time(t), tz=timezone.utc)
    record = {
        "overall": rating, "verified": k % 2 == 0, "reviewTime": f"{day:%m} {day.day}, {day:%Y}",
        "reviewerID": AMAZON_USERS[user], "asin": AMAZON_ITEMS[item],
        "style": {"Format:": " Paperback"}, "reviewerName": f"Reader {k}",
        "reviewText": f"Book {k}. \"Could not put it down\"\nwould buy again", "summary": "Five Stars",
        "unixReviewTime": amazon_time(t),
    }
    if k % 3 == 0:
        record["vote"] = "3"
    if k % 5 == 0:
        record["image"] = ["https://images-na.ssl-images-amazon.com/images/I/71eG75FTJJL._SY88.jpg"]
        del record["style"]
    return json.dumps(record)


def amazon_csv_line(k: int, user: str, item: str, rating: float, t: int) -> str:
    return f"{AMAZON_ITEMS[item]},{AMAZON_USERS[user]},{rating},{amazon_time(t)}"


FORMATS = {  # name -> (format, file name, line writer, time conversion)
    "yelp-json": ("yelp-json", "yelp_academic_dataset_review.json", yelp_line, yelp_time),
    "amazon-csv": ("amazon-csv", "Books.csv", amazon_csv_line, amazon_time),
    "amazon-csv-gz": ("amazon-csv", "Books.csv.gz", amazon_csv_line, amazon_time),
    "amazon-json": ("amazon-json", "Books_5.json", amazon_json_line, amazon_time),
    "amazon-json-gz": ("amazon-json", "Books_5.json.gz", amazon_json_line, amazon_time),
}


def write_lines(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = "".join(line + "\n" for line in lines).encode("utf-8")
    if path.name.endswith(".gz"):
        data = gzip.compress(data, mtime=0)
    path.write_bytes(data)
    return path


def write_source(folder: Path, kind: str, rows=RAW) -> Path:
    """The upstream file in ``folder`` (plus the SOURCE.json the download stage writes beside it)."""
    _, name, line, _ = FORMATS[kind]
    path = write_lines(folder / name, [line(k, *row) for k, row in enumerate(rows)])
    (folder / "SOURCE.json").write_text(json.dumps({"name": "test", "files": [name]}))
    return path


def _split(setting: str, fmt: str) -> SplitConfig:
    return SplitConfig(name=f"tiny_{setting}", dataset="tiny", setting=setting, source="test", format=fmt)


def expected_table(setting: str, to_time) -> pl.DataFrame:
    rows = [(USER_INDEX[u], ITEM_INDEX[i], s, o, to_time(t), r) for u, i, s, o, t, r in CLEAN]
    clean = pl.DataFrame(rows, schema=CANONICAL_SCHEMA, orient="row").sort("user", "order")
    if setting != "noisy":
        return clean
    noise = pl.DataFrame(
        [(USER_INDEX[u], ITEM_INDEX[i], s, to_time(t), r) for u, i, s, t, r in NOISE],
        schema={k: v for k, v in CANONICAL_SCHEMA.items() if k != "order"}, orient="row",
    )
    return (
        pl.concat([clean.drop("order"), noise.select(clean.drop("order").columns)])
        .sort("user", "timestamp", "item")
        .with_columns(order=pl.int_range(pl.len(), dtype=pl.Int32).over("user"))
        .select(COLUMNS)
    )


# --------------------------------------------------------------------------------------------
# readers


def test_yelp_reader_fields(tmp_path):
    write_source(tmp_path, "yelp-json")
    raw = read_yelp_json(tmp_path)
    expected = pl.DataFrame(
        [(YELP_USERS[u], YELP_ITEMS[i], r, yelp_time(t)) for u, i, r, t in RAW], schema=RAW_SCHEMA, orient="row"
    )
    assert raw.equals(expected)  # file order, stars as Float32, date as unix seconds (UTC)
    assert raw["timestamp"][0] == 1_483_408_800  # "2017-01-03 02:00:00" (t = 50 hours)


@pytest.mark.parametrize("kind", ["amazon-csv", "amazon-csv-gz", "amazon-json", "amazon-json-gz"])
def test_amazon_reader_fields(tmp_path, kind):
    write_source(tmp_path, kind)
    raw = READERS[FORMATS[kind][0]](tmp_path)
    expected = pl.DataFrame(
        [(AMAZON_USERS[u], AMAZON_ITEMS[i], r, amazon_time(t)) for u, i, r, t in RAW], schema=RAW_SCHEMA, orient="row"
    )
    assert raw.equals(expected)


@pytest.mark.parametrize("kind", list(FORMATS))
def test_prepare_counts_per_split(tmp_path, kind):
    fmt, _, _, to_time = FORMATS[kind]
    write_source(tmp_path / "raw", kind)
    stats = {}
    for setting in ("clean", "temporal", "noisy"):
        stats[setting] = prepare(_split(setting, fmt), TINY, tmp_path / "raw", tmp_path / setting)
        table = pl.read_parquet(tmp_path / setting / "interactions.parquet")
        assert table.equals(expected_table(setting, to_time)), setting
    clean = stats["clean"]
    assert (clean["n_train"], clean["n_valid"], clean["n_test"]) == (12, 4, 4)
    assert (clean["n_users"], clean["n_items"], clean["format"]) == (4, 6, fmt)
    assert {k: clean[k] for k in ("raw_interactions", "raw_users", "raw_items", "duplicates_removed")} == {
        "raw_interactions": 31, "raw_users": 6, "raw_items": 7, "duplicates_removed": 2,
    }
    assert (clean["threshold_removed_interactions"], clean["threshold_removed_users"]) == (7, 1)
    assert (clean["kcore_removed_users"], clean["kcore_removed_items"], clean["kcore_removed_interactions"]) == (1, 1, 2)
    assert stats["temporal"] == {**clean, "setting": "temporal"}
    noisy = stats["noisy"]
    assert (noisy["n_train"], noisy["n_valid"], noisy["n_test"]) == (14, 5, 4)
    assert (noisy["noise_added_train"], noisy["noise_added_valid"], noisy["noise_dropped_after_valid"]) == (2, 1, 1)


@pytest.mark.parametrize("kind", ["yelp-json", "amazon-csv"])
def test_id_mapping_is_sorted_order_not_file_order(tmp_path, kind):
    """Ids are numbered by sorted raw id string; the file's row order changes nothing."""
    fmt = FORMATS[kind][0]
    write_source(tmp_path / "forward", kind)
    write_source(tmp_path / "backward", kind, rows=RAW[::-1])
    for name in ("forward", "backward"):
        prepare(_split("clean", fmt), TINY, tmp_path / name, tmp_path / f"out-{name}")
    forward = pl.read_parquet(tmp_path / "out-forward" / "interactions.parquet")
    backward = pl.read_parquet(tmp_path / "out-backward" / "interactions.parquet")
    assert forward.equals(backward)
    users, items = (YELP_USERS, YELP_ITEMS) if kind == "yelp-json" else (AMAZON_USERS, AMAZON_ITEMS)
    survivors = sorted(users[u] for u in USER_INDEX)
    assert {users[u]: survivors.index(users[u]) for u in USER_INDEX} == {users[u]: i for u, i in USER_INDEX.items()}
    survivors = sorted(items[i] for i in ITEM_INDEX)
    assert {items[i]: survivors.index(items[i]) for i in ITEM_INDEX} == {items[i]: j for i, j in ITEM_INDEX.items()}
    # user "1" (index 3) first rated item "11" (index 0) at t = 10, then "13" (index 4)
    assert forward.filter(pl.col("user") == 3)["item"].to_list()[:2] == [0, 4]


def test_larger_csv_keeps_file_order(tmp_path):
    """Many streaming chunks: rows come back complete and in file order."""
    n = 200_000
    lines = [f"{i % 9973:010d},A{i % 31337:013d},{1 + i % 5}.0,{1_000_000_000 + i}" for i in range(n)]
    write_lines(tmp_path / "Books.csv", lines)
    raw = read_amazon_csv(tmp_path)
    assert raw.height == n and raw.schema == pl.Schema(RAW_SCHEMA)
    assert raw["timestamp"].to_list() == list(range(1_000_000_000, 1_000_000_000 + n))
    assert raw["raw_item"][12345] == f"{12345 % 9973:010d}"


def test_finds_exactly_one_file(tmp_path):
    write_source(tmp_path / "a", "amazon-json")
    write_source(tmp_path / "a" / "more", "amazon-json-gz")
    with pytest.raises(RawDataError, match="exactly one"):
        read_amazon_json(tmp_path / "a")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RawDataError, match="no yelp_academic_dataset_review.json"):
        read_yelp_json(tmp_path / "empty")


# --------------------------------------------------------------------------------------------
# malformed input: the message names the file and the line


def _error(tmp_path: Path, kind: str, lines: list[str]) -> str:
    fmt, name, _, _ = FORMATS[kind]
    path = write_lines(tmp_path / name, lines)
    with pytest.raises(RawDataError) as err:
        READERS[fmt](tmp_path)
    assert err.value.path == path
    assert str(path) in str(err.value)
    return str(err.value)


def _good(kind: str, n: int = 3) -> list[str]:
    return [FORMATS[kind][2](k, *row) for k, row in enumerate(RAW[:n])]


@pytest.mark.parametrize(
    "kind, bad, line, words",
    [
        ("yelp-json", '{"review_id": "x", "user_id": "u", "business_id": ', 4, "not valid JSON"),
        ("yelp-json", "[1, 2, 3]", 4, "expected a JSON object"),
        ("yelp-json", json.dumps({"review_id": "x", "business_id": "b", "stars": 5, "date": "2017-01-01 00:00:00"}), 4,
         "missing user_id"),
        ("yelp-json", json.dumps({"user_id": "u", "business_id": "", "stars": 5, "date": "2017-01-01 00:00:00"}), 4,
         "empty business_id"),
        ("yelp-json", json.dumps({"user_id": "u", "business_id": "b", "stars": 5, "date": "2017-13-01 00:00:00"}), 4,
         "date is not a date-time"),
        ("yelp-json", json.dumps({"user_id": "u", "business_id": "b", "stars": "five", "date": "2017-01-01 00:00:00"}),
         4, "stars is not a finite number: 'five'"),
        ("amazon-csv", "0439023483,A2SUAM1J3GNN3B,5.0,1262304000,extra", 4, "expected 4 fields"),
        ("amazon-csv", "0439023483,A2SUAM1J3GNN3B,5.0", 4, "expected 4 fields"),
        ("amazon-csv", "0439023483,A2SUAM1J3GNN3B,five,1262304000", 4, "rating is not a finite number"),
        ("amazon-csv", "0439023483,A2SUAM1J3GNN3B,5.0,yesterday", 4, "timestamp is not a number"),
        ("amazon-csv", ",A2SUAM1J3GNN3B,5.0,1262304000", 4, "empty item"),
        ("amazon-json", json.dumps({"reviewerID": "A1", "asin": "B1", "overall": 5.0, "unixReviewTime": "soon"}), 4,
         "unixReviewTime is not a number"),
        ("amazon-json", json.dumps({"reviewerID": "A1", "asin": "B1", "unixReviewTime": 1262304000}), 4,
         "missing overall"),
        ("amazon-json-gz", '{"reviewerID": "A1", "asin": "B1", "overall": 5.0, ', 4, "not valid JSON"),
        ("amazon-csv-gz", "0439023483;A2SUAM1J3GNN3B;5.0;1262304000", 4, "expected 4 fields"),
    ],
)
def test_malformed_line(tmp_path, kind, bad, line, words):
    message = _error(tmp_path, kind, _good(kind) + [bad] + _good(kind))
    assert f"line {line}:" in message and words in message


@pytest.mark.parametrize("kind", ["yelp-json", "amazon-csv", "amazon-json-gz"])
def test_blank_lines_count_in_line_numbers(tmp_path, kind):
    bad = "0439023483,A2SUAM1J3GNN3B,5.0" if kind == "amazon-csv" else "{oops"
    message = _error(tmp_path, kind, _good(kind, 2) + ["", ""] + _good(kind, 2) + [bad])
    assert "line 7:" in message


def test_bad_line_found_across_batches(tmp_path, monkeypatch):
    """The second read works in batches; a bad line deep in a later batch is still named exactly."""
    monkeypatch.setattr(readers, "LOCATE_BATCH_LINES", 7)
    lines = [yelp_line(k, *RAW[k % len(RAW)]) for k in range(60)]
    lines.insert(51, '{"user_id": "u", "business_id": "b", "stars": 4, "date": "yesterday"}')
    message = _error(tmp_path, "yelp-json", lines)
    assert "line 52:" in message and "date is not a date-time" in message
    lines[51] = '{"user_id": "u", "business_id": "b", "stars": 4, "date": '
    assert "line 52:" in _error(tmp_path, "yelp-json", lines)


@pytest.mark.parametrize("kind", list(FORMATS))
def test_empty_file(tmp_path, kind):
    message = _error(tmp_path, kind, [])
    assert "line 1:" in message and "empty" in message


@pytest.mark.parametrize("kind", ["yelp-json", "amazon-csv"])
def test_only_blank_lines_is_empty(tmp_path, kind):
    message = _error(tmp_path, kind, ["", ""])
    assert "line 1:" in message and "empty" in message


def test_prepare_names_the_file_and_line(tmp_path):
    path = write_lines(tmp_path / "raw" / "Books.csv", _good("amazon-csv") + ["0439023483,A1,5.0,1262304000,x"])
    with pytest.raises(RawDataError, match=f"{path}, line 4"):
        prepare(_split("clean", "amazon-csv"), TINY, tmp_path / "raw", tmp_path / "out")


# --------------------------------------------------------------------------------------------
# the formats in params.yaml


@pytest.fixture(scope="module")
def params():
    with open(ROOT / "params.yaml") as fh:
        return yaml.safe_load(fh)


@pytest.mark.parametrize("fmt", ["yelp-json", "amazon-csv", "amazon-json"])
def test_split_may_use_the_new_formats(params, fmt):
    p = copy.deepcopy(params)
    p["sources"]["raw-x"] = {"url": "https://example.org/x", "mirror": "x/x", "sha256": "0" * 64, "archive": "none"}
    p["splits"]["x_clean"] = {"dataset": "x", "setting": "clean", "source": "raw-x", "format": fmt}
    check_schema(p)
    check_semantics(p)


def test_unknown_format_lists_the_allowed_values(params, tmp_path):
    p = copy.deepcopy(params)
    p["splits"]["ml-1m_clean"]["format"] = "yelp"
    with pytest.raises(ConfigError) as err:
        check_schema(p)
    assert err.value.key == "splits.ml-1m_clean.format"
    for name in READERS:
        assert repr(name) in str(err.value)
    with pytest.raises(ValueError, match=r"allowed: \[.*'amazon-csv', 'amazon-json'.*'yelp-json'\]"):
        prepare(_split("clean", "yelp"), TINY, tmp_path, tmp_path / "out")
