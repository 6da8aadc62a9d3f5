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
    source has none), rows in file order. :mod:`pipeline.data.prepare` turns them into splits.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

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


READERS: dict[str, Callable[[Path], pl.DataFrame]] = {
    "diffrec": read_diffrec,
    "movielens-dat": read_movielens_dat,
    "recbole": read_recbole,
}
