"""Atomic file writes and checksums shared by every stage.

Every artifact is written to a temporary file in the destination folder and renamed over the
target only when complete, so a killed stage never leaves a half-written output that
Snakemake or DVC could mistake for a finished one. The finished file has the permissions a plain
``open(path, "w")`` would give it (0666 less the process umask).

Reading an artifact another stage made goes through a helper here too (:func:`read_parquet`), so
that a damaged file is reported as an :class:`ArtifactError` that names it and the stage that
makes it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import uuid
from pathlib import Path
from typing import Iterator

import numpy as np
import polars as pl

# the mode open() asks for when it creates a file; the kernel removes the umask's bits from it
NEW_FILE_MODE = 0o666


class ArtifactError(ValueError):
    """An input file that cannot be used as it is (damaged, or not the one the command names).

    The message names the file and what to do, usually: the stage that makes it, to rerun.
    """


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it over ``target`` on success.

    The temporary file is created with :data:`NEW_FILE_MODE` (exclusively: an existing file is
    never reused), so the finished file gets the mode a plain ``open()`` gives, not the 0600 of
    ``tempfile.mkstemp``.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = target.parent / f".{target.name}.{uuid.uuid4().hex}.tmp"
    os.close(os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, NEW_FILE_MODE))
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_bytes(target: str | os.PathLike, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def write_text(target: str | os.PathLike, text: str) -> None:
    write_bytes(target, text.encode("utf-8"))


def write_json(target: str | os.PathLike, obj) -> None:
    """Deterministic JSON: sorted keys, fixed indentation, trailing newline."""
    write_text(target, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path: str | os.PathLike):
    with open(path) as fh:
        return json.load(fh)


def read_parquet(path: str | os.PathLike, made_by: str, columns: list[str] | None = None) -> pl.DataFrame:
    """``pl.read_parquet(path, columns=columns)`` of a table the stage ``made_by`` writes.

    A file that is not readable Parquet (truncated, overwritten) raises :class:`ArtifactError`
    naming the file and that stage; a missing file raises FileNotFoundError as usual.
    """
    try:
        return pl.read_parquet(path, columns=columns)
    except pl.exceptions.ComputeError as err:  # what polars raises for bytes that are not Parquet
        raise ArtifactError(
            f"{path} is not a readable Parquet file ({err}); it is made by the `{made_by}` stage: "
            f"delete it and rerun {made_by}"
        ) from err


def file_digest(path: str | os.PathLike, algorithm: str = "sha256", chunk: int = 1 << 20) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def write_embeddings(path: str | Path, embeddings: np.ndarray) -> None:
    """Atomic ``np.save`` of a float32 array (through a file handle, so no '.npy' is appended)."""
    array = np.ascontiguousarray(embeddings, dtype=np.float32)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, array, allow_pickle=False)
