"""Readers for the raw interaction formats named in ``params.yaml`` (``splits.*.format``).

Each reader takes the folder a source was downloaded (and extracted) into and returns a polars
DataFrame; malformed input raises :class:`RawDataError` naming the file and, for text files,
the 1-based line number.

``diffrec``
    DiffRec's released split (``train_list.npy``, ``valid_list.npy``, ``test_list.npy``); the
    result already has the canonical columns (see :mod:`pipeline.data`), ids as released.
``movielens-dat`` and ``recbole``
    Raw ratings; the result has the columns ``raw_user`` (String), ``raw_item`` (String),
    ``rating`` (Float32, null when the source has none) and ``timestamp`` (Int64, null when the
    source has none), rows in file order. :mod:`pipeline.stages.prepare` turns them into splits.
``tvdiff-count`` and ``tvdiff-time``
    TV-Diff's given train/test split: ``train.txt`` and ``test.txt`` (exactly one of each,
    searched recursively), lines ``user<TAB>item<TAB>value``, no header, CRLF or LF line ends
    (a trailing CR is part of the line end, never of the value). The value is a play count for
    ``tvdiff-count`` (lastfm; it goes to ``rating``, timestamp null) and unix seconds for
    ``tvdiff-time`` (amazon-beauty; it goes to ``timestamp``, rating null). The result has the
    raw columns plus ``split`` (String, ``"train"`` or ``"test"``: the file a row comes from; the
    split is given, not generated) and ``line`` (Int64, 1-based line in that file), train rows
    first, each file in file order. :mod:`pipeline.stages.prepare` turns them into the settings
    ``carved`` and ``authors``.
``yelp-json``, ``amazon-csv`` and ``amazon-json``
    Raw ratings from the Yelp Open Dataset and the Amazon review data (McAuley et al. 2018),
    with the same result columns. These files reach several GB, so they are read with polars'
    lazy scans on the streaming engine, projected to the four needed fields (review texts are
    never held in memory); gzip-compressed files (``.gz``) are streamed as well. Only when
    something is wrong is the file read a second time, in batches of lines, to name the first
    bad line (see :func:`_locate`). Raw ids stay strings; prepare numbers them (step 4 of
    :mod:`pipeline.stages.prepare`: sorted byte order of the raw id strings).
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import polars as pl

from pipeline.data import COLUMNS, SPLITS

RAW_SCHEMA = {"raw_user": pl.String, "raw_item": pl.String, "rating": pl.Float32, "timestamp": pl.Int64}


class RawDataError(ValueError):
    """Malformed raw input: the message names the file and, where there is one, the line."""

    def __init__(self, path: str | Path, message: str, line: int | None = None):
        self.path = Path(path)
        self.line = line
        where = f"{path}, line {line}" if line is not None else f"{path}"
        super().__init__(f"{where}: {message}")


# --------------------------------------------------------------------------------------------
# helpers


def _find_one(folder: Path, pattern: str) -> Path | None:
    """The single file matching ``pattern`` under ``folder`` (recursively); None if there is none.

    ``folder`` may also be the file itself.
    """
    folder = Path(folder)
    if folder.is_file():
        return folder if folder.match(pattern) else None
    if not folder.is_dir():
        raise FileNotFoundError(f"raw data folder not found: {folder}")
    found = sorted(p for p in folder.rglob(pattern) if p.is_file())
    if len(found) > 1:
        raise RawDataError(folder, f"expected exactly one {pattern!r}, found {len(found)}: {[str(p) for p in found]}")
    return found[0] if found else None


def _read_lines(path: Path) -> list[str]:
    """The file's lines (without line endings); a file with no non-blank line is an error."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise RawDataError(path, f"not UTF-8 text ({err.reason})", line=data.count(b"\n", 0, err.start) + 1) from None
    lines = text.splitlines()
    if not any(line.strip() for line in lines):
        raise RawDataError(path, "empty file", line=1)
    return lines


def _split_fields(path: Path, lines: list[str], sep: str, n_fields: int, first_line: int) -> pl.DataFrame:
    """Split text lines into ``n_fields`` stripped String columns ``f0..``, plus ``line`` (1-based).

    Blank lines are skipped; any other line with a different field count is an error.
    """
    frame = pl.DataFrame({"text": pl.Series(lines, dtype=pl.String)}).with_columns(
        line=pl.int_range(first_line, first_line + len(lines), dtype=pl.Int64)
    )
    frame = frame.filter(pl.col("text").str.strip_chars() != "")
    if frame.height == 0:
        raise RawDataError(path, "no data rows", line=first_line)
    frame = frame.with_columns(fields=pl.col("text").str.split(sep))
    bad = frame.filter(pl.col("fields").list.len() != n_fields)
    if bad.height:
        row = bad.row(0, named=True)
        raise RawDataError(
            path, f"expected {n_fields} fields separated by {sep!r}, got {len(row['fields'])}", line=row["line"]
        )
    return frame.select(
        "line", *[pl.col("fields").list.get(i).str.strip_chars().alias(f"f{i}") for i in range(n_fields)]
    )


def _numeric(path: Path, frame: pl.DataFrame, column: str, what: str) -> pl.Series:
    """Parse a String column as finite Float64; the first bad value raises with its line."""
    values = frame[column].cast(pl.Float64, strict=False)
    ok = values.is_not_null() & values.is_finite()
    if not ok.all():
        i = int(ok.not_().arg_max())
        raise RawDataError(path, f"{what} is not a finite number: {frame[column][i]!r}", line=int(frame["line"][i]))
    return values


def _raw_frame(path: Path, frame: pl.DataFrame, user: str, item: str, rating: str | None, timestamp: str | None):
    """Assemble the raw-interaction columns from split String fields."""
    n = frame.height
    for col, what in ((user, "user id"), (item, "item id")):
        empty = frame[col] == ""
        if empty.any():
            raise RawDataError(path, f"empty {what}", line=int(frame["line"][int(empty.arg_max())]))
    return pl.DataFrame(
        {
            "raw_user": frame[user],
            "raw_item": frame[item],
            "rating": (
                _numeric(path, frame, rating, "rating").cast(pl.Float32)
                if rating
                else pl.Series([None] * n, dtype=pl.Float32)
            ),
            "timestamp": (
                _numeric(path, frame, timestamp, "timestamp").cast(pl.Int64)
                if timestamp
                else pl.Series([None] * n, dtype=pl.Int64)
            ),
        },
        schema=RAW_SCHEMA,
    )


# --------------------------------------------------------------------------------------------
# readers


def read_diffrec(folder: Path) -> pl.DataFrame:
    """DiffRec's released split as canonical rows (ids as released, no filtering).

    ``train_list.npy``, ``valid_list.npy`` and ``test_list.npy`` (exactly one of each, searched
    recursively) hold int (N, 2) arrays of (user, item), grouped by user, each user's rows in
    time order. ``order`` is the position within the user over train, then valid, then test,
    which is the user's time order in the release. ``timestamp`` and ``rating`` are null.
    """
    parts = []
    for split in SPLITS:
        name = f"{split}_list.npy"
        path = _find_one(Path(folder), name)
        if path is None:
            raise RawDataError(folder, f"no {name} found")
        try:
            array = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as err:
            raise RawDataError(path, f"not a readable .npy array ({err})") from None
        if array.ndim != 2 or array.shape[1] != 2:
            raise RawDataError(path, f"expected shape (N, 2), got {array.shape}")
        if not np.issubdtype(array.dtype, np.integer):
            raise RawDataError(path, f"expected integer ids, got dtype {array.dtype}")
        if array.shape[0] and array.min() < 0:
            row = int(np.argwhere(array < 0)[0, 0])
            raise RawDataError(path, f"negative id in row {row}: {array[row].tolist()}")
        if array.shape[0] and array.max() > np.iinfo(np.int32).max:
            raise RawDataError(path, "id does not fit in Int32")
        parts.append(
            pl.DataFrame(
                {"user": array[:, 0].astype(np.int32), "item": array[:, 1].astype(np.int32)},
                schema={"user": pl.Int32, "item": pl.Int32},
            ).with_columns(split=pl.lit(split, dtype=pl.String))
        )
    rows = pl.concat(parts, how="vertical")
    if rows.height == 0:
        raise RawDataError(folder, "the released split holds no interactions")
    # Stable sort by user keeps train, valid, test (and the rows within each) in file order.
    rows = rows.sort("user", maintain_order=True).with_columns(
        order=pl.int_range(pl.len(), dtype=pl.Int32).over("user"),
        timestamp=pl.lit(None, dtype=pl.Int64),
        rating=pl.lit(None, dtype=pl.Float32),
    )
    return rows.select(COLUMNS)


def read_movielens_dat(folder: Path) -> pl.DataFrame:
    """GroupLens MovieLens ratings: ML-1M ``ratings.dat`` or ML-100K ``u.data``.

    ``ratings.dat`` lines are ``UserID::MovieID::Rating::Timestamp``; ``u.data`` lines are
    ``user<TAB>item<TAB>rating<TAB>timestamp``. The file is searched recursively under
    ``folder`` (e.g. ``ml-1m/ratings.dat`` inside the extracted zip); ``ratings.dat`` wins
    when both exist.
    """
    for name, sep in (("ratings.dat", "::"), ("u.data", "\t")):
        path = _find_one(Path(folder), name)
        if path is not None:
            break
    else:
        raise RawDataError(folder, "no ratings.dat or u.data found")
    frame = _split_fields(path, _read_lines(path), sep, 4, first_line=1)
    return _raw_frame(path, frame, "f0", "f1", "f2", "f3")


RECBOLE_FIELDS = ("user_id", "item_id", "rating", "timestamp")


def read_recbole(folder: Path) -> pl.DataFrame:
    """RecBole atomic ``.inter`` file (exactly one ``*.inter``, searched recursively).

    Tab-separated with a header of ``name:type`` fields, e.g.
    ``user_id:token  item_id:token  rating:float  timestamp:float``. Columns are found by name:
    ``user_id`` and ``item_id`` are required, ``rating`` and ``timestamp`` optional (null when
    absent); other columns are ignored. Float timestamps are truncated to whole seconds.
    """
    path = _find_one(Path(folder), "*.inter")
    if path is None:
        raise RawDataError(folder, "no *.inter file found")
    lines = _read_lines(path)
    header = [field.strip().split(":", 1)[0] for field in lines[0].split("\t")]
    position = {}
    for i, name in enumerate(header):
        if name in RECBOLE_FIELDS:
            if name in position:
                raise RawDataError(path, f"header names {name!r} twice", line=1)
            position[name] = f"f{i}"
    for required in ("user_id", "item_id"):
        if required not in position:
            raise RawDataError(path, f"header lacks {required!r} (header fields: {header})", line=1)
    frame = _split_fields(path, lines[1:], "\t", len(header), first_line=2)
    return _raw_frame(
        path, frame, position["user_id"], position["item_id"], position.get("rating"), position.get("timestamp")
    )


GIVEN_FILES = ("train", "test")  # the parts of a given split, in the order they are read
GIVEN_SCHEMA = {**RAW_SCHEMA, "split": pl.String, "line": pl.Int64}


def _read_given(folder: Path, value: str) -> pl.DataFrame:
    """TV-Diff's ``train.txt`` and ``test.txt`` (module docstring); ``value`` is the raw column the
    third field goes to: ``rating`` or ``timestamp``."""
    parts = []
    for part in GIVEN_FILES:
        name = f"{part}.txt"
        path = _find_one(Path(folder), name)
        if path is None:
            raise RawDataError(folder, f"no {name} found (a given split needs train.txt and test.txt)")
        # splitlines() ends a line at LF, CRLF or a lone CR: no CR is left inside a field
        frame = _split_fields(path, _read_lines(path), "\t", 3, first_line=1)
        raw = _raw_frame(path, frame, "f0", "f1", "f2" if value == "rating" else None,
                         "f2" if value == "timestamp" else None)
        parts.append(raw.with_columns(split=pl.lit(part, dtype=pl.String), line=frame["line"]))
    return pl.concat(parts, how="vertical").cast(GIVEN_SCHEMA)


def read_tvdiff_count(folder: Path) -> pl.DataFrame:
    """TV-Diff's given split with play counts (lastfm): the value goes to ``rating``."""
    return _read_given(folder, "rating")


def read_tvdiff_time(folder: Path) -> pl.DataFrame:
    """TV-Diff's given split with unix times (amazon-beauty): the value goes to ``timestamp``."""
    return _read_given(folder, "timestamp")


# --------------------------------------------------------------------------------------------
# large raw files: Yelp and Amazon, streamed with polars' lazy scans


@dataclass(frozen=True)
class _Layout:
    """Where the four raw fields are in a line-oriented file.

    ``kind`` is ``ndjson`` (one JSON object per line; ``fields`` are key names) or ``csv``
    (comma-separated, no header; ``fields`` are the names given to its columns, in file order).
    ``user``, ``item``, ``rating``, ``timestamp`` name the fields to use; ``time_format`` is the
    strptime format of a date-time field read as UTC, or None for unix seconds.
    """

    kind: str
    fields: tuple[str, ...]
    user: str
    item: str
    rating: str
    timestamp: str
    time_format: str | None = None

    def blank(self, line: bytes) -> bool:
        """A line the parser skips: whitespace-only for JSON lines, empty for CSV."""
        return not (line.strip() if self.kind == "ndjson" else line.rstrip(b"\r\n"))


YELP_REVIEWS = "yelp_academic_dataset_review.json"
YELP = _Layout("ndjson", ("user_id", "business_id", "stars", "date"), "user_id", "business_id", "stars", "date",
               time_format="%Y-%m-%d %H:%M:%S")
AMAZON_CSV = _Layout("csv", ("item", "user", "rating", "timestamp"), "user", "item", "rating", "timestamp")
AMAZON_JSON = _Layout("ndjson", ("reviewerID", "asin", "overall", "unixReviewTime"), "reviewerID", "asin", "overall",
                      "unixReviewTime")
LOCATE_BATCH_LINES = 100_000  # lines per batch when searching for the first bad line
MANIFESTS = ("SOURCE.json", "SYNTHETIC.json")  # written by the download / synthesize stages


def _typed(layout: _Layout) -> list[pl.Expr]:
    """String fields -> raw_user, raw_item, rating (Float64), timestamp (Int64); bad values -> null."""
    def text(name: str) -> pl.Expr:
        return pl.col(name).str.strip_chars() if layout.kind == "csv" else pl.col(name)

    if layout.time_format:
        timestamp = text(layout.timestamp).str.to_datetime(layout.time_format, strict=False, time_unit="us").dt.epoch("s")
    else:  # unix seconds; a fractional value is truncated to whole seconds (as the other readers do)
        seconds = text(layout.timestamp).cast(pl.Float64, strict=False)
        timestamp = pl.when(seconds.is_finite() & (seconds.abs() < 2.0**62)).then(seconds).cast(pl.Int64)
    rating = text(layout.rating).cast(pl.Float64, strict=False)
    return [
        text(layout.user).alias("raw_user"),
        text(layout.item).alias("raw_item"),
        pl.when(rating.is_finite()).then(rating).alias("rating"),
        timestamp.alias("timestamp"),
    ]


def _valid() -> pl.Expr:
    """True for a row whose four typed fields are all usable."""
    return (
        pl.col("raw_user").is_not_null() & (pl.col("raw_user") != "")
        & pl.col("raw_item").is_not_null() & (pl.col("raw_item") != "")
        & pl.col("rating").is_not_null() & pl.col("timestamp").is_not_null()
    )


def _schema(layout: _Layout) -> dict:
    return {name: pl.String for name in layout.fields}


def _parse(layout: _Layout, source) -> pl.DataFrame:
    """Parse a batch of lines (bytes) into String fields; raises what polars raises."""
    if layout.kind == "ndjson":
        return pl.read_ndjson(source, schema=_schema(layout))
    return pl.read_csv(source, has_header=False, schema=_schema(layout), infer_schema=False)


def _open_lines(path: Path):
    return gzip.open(path, "rb") if path.name.endswith(".gz") else open(path, "rb")


def _lines(path: Path, layout: _Layout) -> Iterator[tuple[int, bytes]]:
    """(1-based line number, line) of every line the parser does not skip, streamed."""
    try:
        with _open_lines(path) as fh:
            for number, line in enumerate(fh, start=1):
                if not layout.blank(line):
                    yield number, line
    except (OSError, EOFError) as err:  # e.g. a corrupt or truncated .gz
        raise RawDataError(path, f"cannot be read: {err}") from None


def _line_problem(layout: _Layout, line: bytes) -> str:
    """Why a single line does not parse (or has a bad field), in words."""
    text = line.decode("utf-8", errors="replace").rstrip("\r\n")
    if layout.kind == "csv":
        fields = next(csv.reader([text]), [])
        if len(fields) != len(layout.fields):
            return f"expected {len(layout.fields)} fields separated by ',' ({', '.join(layout.fields)}), got {len(fields)}"
    else:
        try:
            record = json.loads(text)
        except ValueError as err:
            return f"not valid JSON ({err})"
        if not isinstance(record, dict):
            return f"expected a JSON object, got {type(record).__name__}"
    try:
        row = _parse(layout, io.BytesIO(line)).row(0, named=True)
    except Exception as err:  # noqa: BLE001 - polars' parse errors have several types
        return f"cannot be parsed: {err}"
    return _field_problem(layout, row) or "cannot be parsed together with the lines before it (an unclosed quote?)"


def _field_problem(layout: _Layout, row: dict) -> str:
    """The first unusable field of a parsed row (String values), in words; '' if none."""
    typed = pl.DataFrame([row], schema=_schema(layout)).select(_typed(layout)).row(0, named=True)
    missing = "empty" if layout.kind == "csv" else "missing"  # polars reads an empty CSV field as null
    for field, key in ((layout.user, "raw_user"), (layout.item, "raw_item")):
        if row[field] is None:
            return f"{missing} {field}"
        if typed[key] == "":
            return f"empty {field}"
    if row[layout.rating] is None:
        return f"{missing} {layout.rating}"
    if typed["rating"] is None:
        return f"{layout.rating} is not a finite number: {row[layout.rating]!r}"
    if row[layout.timestamp] is None:
        return f"{missing} {layout.timestamp}"
    if typed["timestamp"] is None:
        want = f"a date-time {layout.time_format!r}" if layout.time_format else "a number (unix seconds)"
        return f"{layout.timestamp} is not {want}: {row[layout.timestamp]!r}"
    return ""


def _locate(path: Path, layout: _Layout) -> RawDataError | None:
    """Read the file again, in batches of lines, and describe its first bad line (None if none).

    A batch that fails to parse is searched by bisection on its prefix length, so each batch
    costs a few polars calls; the file is streamed, never held whole.
    """
    def check(batch: list[tuple[int, bytes]]) -> RawDataError | None:
        data = b"".join(line if line.endswith(b"\n") else line + b"\n" for _, line in batch)
        try:
            frame = _parse(layout, io.BytesIO(data))
        except Exception:  # noqa: BLE001 - find the first line whose prefix no longer parses
            lo, hi = 0, len(batch) - 1  # the prefix batch[:hi + 1] fails; find the smallest
            while lo < hi:
                mid = (lo + hi) // 2
                try:
                    _parse(layout, io.BytesIO(b"".join(line for _, line in batch[: mid + 1])))
                    lo = mid + 1
                except Exception:  # noqa: BLE001
                    hi = mid
            number, line = batch[lo]
            return RawDataError(path, _line_problem(layout, line), line=number)
        if frame.height != len(batch):  # cannot happen with the blank-line rule above; be safe
            return None
        bad = frame.select(_typed(layout)).select(~_valid())[:, 0]
        if bad.any():
            number, line = batch[int(bad.arg_max())]
            return RawDataError(path, _line_problem(layout, line), line=number)
        return None

    batch: list[tuple[int, bytes]] = []
    seen = False
    for item in _lines(path, layout):
        batch.append(item)
        seen = True
        if len(batch) == LOCATE_BATCH_LINES:
            if error := check(batch):
                return error
            batch = []
    if not seen:
        return RawDataError(path, "empty file", line=1)
    return check(batch) if batch else None


def _scan_text(path: Path, layout: _Layout) -> pl.DataFrame:
    """Stream a large line-oriented file into the raw-interaction columns (file order).

    Runs one lazy scan on polars' streaming engine that keeps only the four fields, already
    typed. Anything wrong (unparseable line, missing or empty id, non-numeric rating, bad
    time) makes :func:`_locate` find the first bad line for the error message.
    """
    if path.stat().st_size == 0:
        raise RawDataError(path, "empty file", line=1)
    if layout.kind == "ndjson":
        lazy = pl.scan_ndjson(path, schema=_schema(layout))
    else:  # an empty CSV line is a row of nulls: drop those (their line numbers still count)
        lazy = pl.scan_csv(path, has_header=False, schema=_schema(layout), infer_schema=False)
        lazy = lazy.filter(pl.any_horizontal(pl.col(name).is_not_null() for name in layout.fields))
    lazy = lazy.select(_typed(layout)).with_columns(_ok=_valid())
    try:
        frame = lazy.collect(engine="streaming")
    except pl.exceptions.PolarsError as err:
        raise _locate(path, layout) or RawDataError(path, f"cannot be read: {err}") from None
    except (OSError, EOFError) as err:
        raise RawDataError(path, f"cannot be read: {err}") from None
    if frame.height == 0:
        raise RawDataError(path, "empty file", line=1)
    if not frame["_ok"].all():
        raise _locate(path, layout) or RawDataError(path, "malformed row (line not found on a second read)")
    return frame.select(
        "raw_user", "raw_item", pl.col("rating").cast(pl.Float32), pl.col("timestamp").cast(pl.Int64)
    ).cast(RAW_SCHEMA)


def _find_data_file(folder: Path, patterns: tuple[str, ...], what: str) -> Path:
    """The single file under ``folder`` matching one of ``patterns`` (stage manifests excluded)."""
    folder = Path(folder)
    if folder.is_file():
        return folder
    if not folder.is_dir():
        raise FileNotFoundError(f"raw data folder not found: {folder}")
    found = sorted({p for pattern in patterns for p in folder.rglob(pattern) if p.is_file() and p.name not in MANIFESTS})
    if not found:
        raise RawDataError(folder, f"no {what} found (looked for {list(patterns)})")
    if len(found) > 1:
        raise RawDataError(folder, f"expected exactly one {what}, found {len(found)}: {[str(p) for p in found]}")
    return found[0]


def read_yelp_json(folder: Path) -> pl.DataFrame:
    """Yelp Open Dataset reviews: ``yelp_academic_dataset_review.json`` (searched recursively).

    JSON lines with ``review_id, user_id, business_id, stars, useful, funny, cool, text, date``;
    uses ``user_id`` -> raw_user, ``business_id`` -> raw_item, ``stars`` -> rating and ``date``
    (``YYYY-MM-DD HH:MM:SS``, read as UTC) -> timestamp in unix seconds. Other fields are
    ignored (never loaded). A ``.json.gz`` copy of the file is read as well.
    """
    path = _find_data_file(Path(folder), (YELP_REVIEWS, YELP_REVIEWS + ".gz"), YELP_REVIEWS)
    return _scan_text(path, YELP)


def read_amazon_csv(folder: Path) -> pl.DataFrame:
    """Amazon review data, "ratings only" CSV (McAuley 2018, e.g. ``Books.csv``; also ``.csv.gz``).

    Exactly one ``*.csv`` / ``*.csv.gz`` under ``folder``; no header; lines ``item,user,rating,
    unix_time`` (item = ASIN, user = reviewer id). Fields are stripped of spaces.
    """
    path = _find_data_file(Path(folder), ("*.csv", "*.csv.gz"), "ratings CSV (*.csv, *.csv.gz)")
    return _scan_text(path, AMAZON_CSV)


def read_amazon_json(folder: Path) -> pl.DataFrame:
    """Amazon review data, JSON lines (2018 ``reviewerID, asin, overall, unixReviewTime, ...``).

    Exactly one ``*.json`` or ``*.json.gz`` under ``folder`` (``SOURCE.json`` of the download
    stage excepted), e.g. ``Books.json.gz`` or the 5-core ``Books_5.json.gz``; gzip is streamed.
    ``reviewerID`` -> raw_user, ``asin`` -> raw_item, ``overall`` -> rating, ``unixReviewTime``
    -> timestamp; other fields (review text, style, images, ...) are ignored. The 2014 files
    use the same four keys and are read too when they are strict JSON.
    """
    path = _find_data_file(Path(folder), ("*.json", "*.json.gz"), "review file (*.json, *.json.gz)")
    return _scan_text(path, AMAZON_JSON)


READERS: dict[str, Callable[[Path], pl.DataFrame]] = {
    "diffrec": read_diffrec,
    "movielens-dat": read_movielens_dat,
    "recbole": read_recbole,
    "yelp-json": read_yelp_json,
    "amazon-csv": read_amazon_csv,
    "amazon-json": read_amazon_json,
    "tvdiff-count": read_tvdiff_count,
    "tvdiff-time": read_tvdiff_time,
}
"""Reader of each ``splits.*.format`` value (the schema's enum lists the same names)."""
