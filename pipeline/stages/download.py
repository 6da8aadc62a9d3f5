"""Download stage: materialise one entry of ``params.yaml`` ``sources:`` into a folder.

For a source (see :class:`pipeline.config.SourceConfig`) the stage

1. obtains the upstream file, either from the local mirror folder (``paths.mirror`` or
   ``$PIPELINE_MIRROR``; the file is ``<mirror>/<source.mirror>``) or, when no mirror is
   configured, by downloading ``source.url`` (streamed, redirects followed, transient
   failures retried);
2. verifies its checksum (``sha256`` when given, else ``md5``) before anything is written;
3. copies it (``archive: none``, the file keeps the basename of ``source.mirror``) or
   extracts it with libarchive (``archive: rar`` or ``zip``), refusing absolute paths,
   ``..`` components, links and special files;
4. writes ``SOURCE.json`` (name, url, archive, checksum, the files relative to the output
   folder) beside the data, without timestamps so the output is byte-reproducible.

A multi-file source (``files:``, e.g. a given train/test pair) does steps 1-3 for each of its
files in the order listed, each with its own url, mirror path and checksum, and copies them
side by side (each keeps the basename of its ``mirror``; no archives); its ``SOURCE.json``
holds the name, ``archive: "none"``, ``files`` (the names) and ``sources`` (per file: name,
url, checksum). Any file that is missing or has the wrong checksum fails the whole source.

Everything is built in a hidden temporary sibling of the output folder, which replaces the
output folder only once complete: a failure leaves no partial output and no temporary files,
and simply running the stage again is the way to recover.
"""

from __future__ import annotations

import http.client
import os
import re
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path, PurePosixPath

import libarchive
import libarchive.exception

from pipeline.config import ConfigError, SourceConfig, SourceFile, mirror_dir, source_config
from pipeline.io import file_digest, write_json

ARCHIVES = ("none", "rar", "zip")
USER_AGENT = "diffrec-pipeline/0.1 (+https://github.com/YiyanXu/DiffRec; python-urllib)"
CHUNK = 1 << 20
BACKOFF_S = 0.5  # sleep BACKOFF_S * attempt between download attempts
PROGRESS_MIN_BYTES = 8 << 20  # downloads at least this large report progress
PROGRESS_EVERY_S = 0.5  # at most one progress line per this many seconds
MANIFEST = "SOURCE.json"


class DownloadError(RuntimeError):
    """A source could not be obtained, verified or extracted; the message says why."""


class _Retryable(Exception):
    """Internal: a transient download failure (5xx, connection error, timeout, truncation)."""


def fetch(
    source: SourceConfig,
    out_dir: Path,
    mirror: Path | None,
    retries: int = 3,
    timeout: float = 60.0,
) -> list[Path]:
    """Materialise one source into out_dir and return the files written (sorted).

    The returned paths are the data files (copied or extracted), under ``out_dir``;
    ``out_dir / "SOURCE.json"`` is always written beside them and is not in the list.
    With ``mirror=None`` the file is downloaded from ``source.url``; ``retries`` is the number
    of extra attempts after a transient failure (HTTP 5xx, connection error, timeout,
    truncated body), ``timeout`` the socket timeout in seconds. An existing ``out_dir`` is
    replaced only on success. A multi-file source (``source.files``) copies each of its files.
    """
    out_dir = Path(out_dir)
    if source.archive not in ARCHIVES:
        raise ConfigError(f"sources.{source.name}.archive", f"{source.archive!r} is not allowed; allowed values: {list(ARCHIVES)}")
    if source.files and source.archive != "none":
        raise ConfigError(f"sources.{source.name}.archive", "a source with several files holds plain files only (archive: none)")
    entries = source.entries()
    checksums = [_checksum(source, entry) for entry in entries]
    names = [Path(entry.mirror).name for entry in entries]
    if len(set(names)) != len(names):
        raise DownloadError(f"source {source.name!r}: two files would be saved under the same name: {names}")

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    downloads: list[Path] = []
    try:
        files: list[str] = []
        for entry, (algorithm, expected), name in zip(entries, checksums, names):
            path = _obtain(source, entry, out_dir, mirror, downloads, retries, timeout)
            if source.archive == "none":
                if name == MANIFEST:
                    raise DownloadError(f"source {source.name!r}: a data file may not be called {MANIFEST}")
                shutil.copyfile(path, staging / name)
                files.append(name)
            else:
                files = _extract(path, staging, source.name)

        if source.files:
            manifest = {
                "name": source.name,
                "archive": source.archive,
                "files": sorted(files),
                "sources": [
                    {"file": name, "url": entry.url, "checksum": {"algorithm": algorithm, "value": expected}}
                    for entry, (algorithm, expected), name in zip(entries, checksums, names)
                ],
            }
        else:  # the one-file form keeps its manifest as it always was
            (algorithm, expected), = checksums
            manifest = {
                "name": source.name,
                "url": source.url,
                "archive": source.archive,
                "checksum": {"algorithm": algorithm, "value": expected},
                "files": files,
            }
        write_json(staging / MANIFEST, manifest)
        _replace_dir(staging, out_dir)
    finally:
        for download in downloads:
            if download.exists():
                download.unlink()
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return [out_dir / f for f in sorted(files)]


def _obtain(
    source: SourceConfig,
    entry: SourceFile,
    out_dir: Path,
    mirror: Path | None,
    downloads: list[Path],
    retries: int,
    timeout: float,
) -> Path:
    """The verified local copy of one upstream file: the mirror's file, or a download (its
    temporary path is appended to ``downloads`` for the caller to remove)."""
    algorithm, expected = _checksum(source, entry)
    if mirror is not None:
        path = Path(mirror) / entry.mirror
        if not path.is_file():
            raise DownloadError(
                f"source {source.name!r}: mirror file {path} not found (upstream url: {entry.url}). "
                f"Put the upstream file there, point PIPELINE_MIRROR or paths.mirror at a folder "
                f"that holds it, or set PIPELINE_MIRROR='' (or paths.mirror: null) to download it."
            )
        where = str(path)
    else:
        fd, tmp = tempfile.mkstemp(prefix=f".{out_dir.name}.", suffix=".download", dir=out_dir.parent)
        os.close(fd)
        path = Path(tmp)
        downloads.append(path)
        _download(entry.url, path, retries=retries, timeout=timeout)
        where = f"{path} (downloaded from {entry.url})"

    actual = file_digest(path, algorithm)
    if actual != expected:
        raise DownloadError(
            f"source {source.name!r}: {algorithm} mismatch for {where}: "
            f"expected {expected}, actual {actual}"
        )
    return path


def _checksum(source: SourceConfig, entry: SourceFile) -> tuple[str, str]:
    """(algorithm, expected lower-case hex digest) of one file: sha256 if given, else md5."""
    if entry.sha256:
        return "sha256", entry.sha256.lower()
    if entry.md5:
        return "md5", entry.md5.lower()
    if source.files:
        i = source.files.index(entry)
        raise DownloadError(f"source {source.name!r}: file {entry.mirror!r} has no checksum: set "
                            f"sources.{source.name}.files[{i}].sha256 or .md5")
    raise DownloadError(f"source {source.name!r} has no checksum: set sources.{source.name}.sha256 or .md5")


def _replace_dir(staging: Path, out_dir: Path) -> None:
    """Put the finished staging folder in place of out_dir (removing an old one first)."""
    if out_dir.is_symlink() or out_dir.is_file():
        out_dir.unlink()
    elif out_dir.exists():
        shutil.rmtree(out_dir)
    os.replace(staging, out_dir)


# --- downloading -------------------------------------------------------------------------


def _download(url: str, dest: Path, retries: int, timeout: float) -> None:
    """Stream url into dest, retrying transient failures; a 4xx is final."""
    attempts = max(0, retries) + 1
    for attempt in range(1, attempts + 1):
        try:
            _download_once(url, dest, timeout)
            return
        except urllib.error.HTTPError as exc:
            message = f"HTTP {exc.code} {exc.reason} for {url}"
            if exc.code < 500:
                raise DownloadError(message) from None
            last = message
        except _Retryable as exc:
            last = str(exc)
        except (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError) as exc:
            reason = getattr(exc, "reason", exc)
            last = f"cannot fetch {url}: {type(reason).__name__}: {reason}"
        if attempt < attempts:
            print(f"download: {last}; retrying ({attempt}/{attempts - 1})", file=sys.stderr)
            time.sleep(BACKOFF_S * attempt)
    raise DownloadError(f"{last} (gave up after {attempts} attempts)")


def _download_once(url: str, dest: Path, timeout: float) -> None:
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        got = 0
        progress = _Progress(url, total)
        with open(dest, "wb") as fh:
            while True:
                try:
                    block = response.read(CHUNK)
                except http.client.IncompleteRead as exc:
                    fh.write(exc.partial)
                    got += len(exc.partial)
                    break
                if not block:
                    break
                fh.write(block)
                got += len(block)
                progress.update(got)
        progress.done(got)
    if total is not None and got != total:
        raise _Retryable(f"truncated: got {got} of {total} bytes from {url}")


class _Progress:
    """Progress lines on stderr for large downloads, at most one per PROGRESS_EVERY_S."""

    def __init__(self, url: str, total: int | None):
        self.url = url
        self.total = total
        self.last = time.monotonic()
        self.shown = -1  # bytes at the last line printed; -1: none yet

    def _line(self, got: int) -> None:
        size = f"{got / 2**20:.1f} MiB"
        if self.total:
            size += f" / {self.total / 2**20:.1f} MiB ({100 * got / self.total:.0f}%)"
        print(f"download: {self.url}: {size}", file=sys.stderr, flush=True)
        self.shown = got

    def update(self, got: int) -> None:
        if max(got, self.total or 0) < PROGRESS_MIN_BYTES:
            return
        now = time.monotonic()
        if now - self.last >= PROGRESS_EVERY_S:
            self.last = now
            self._line(got)

    def done(self, got: int) -> None:
        if 0 <= self.shown != got:
            self._line(got)


# --- extraction --------------------------------------------------------------------------

_DRIVE = re.compile(r"^[A-Za-z]:")


def _safe_relpath(name: str) -> PurePosixPath | None:
    """The entry's path relative to the output folder; None for an empty/'.' path.

    Raises DownloadError for absolute paths (also Windows drive or backslash forms) and
    for paths with '..' components.
    """
    unsafe = DownloadError(f"unsafe archive entry {name!r}: absolute path or '..' component")
    if "\x00" in name or name.startswith(("/", "\\")) or _DRIVE.match(name):
        raise unsafe
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
    if ".." in parts:
        raise unsafe
    return PurePosixPath(*parts) if parts else None


def _extract(archive: Path, dest: Path, source_name: str) -> list[str]:
    """Extract every regular file of archive under dest; returns their sorted relative paths."""
    files: set[str] = set()
    try:
        with libarchive.file_reader(str(archive)) as reader:
            for entry in reader:
                name = entry.pathname or ""
                rel = _safe_relpath(name)
                if entry.issym or entry.islnk:
                    raise DownloadError(f"unsafe archive entry {name!r}: links are not allowed")
                if entry.isdir:
                    if rel is not None:
                        (dest / rel).mkdir(parents=True, exist_ok=True)
                    continue
                if not entry.isreg:
                    raise DownloadError(f"unsafe archive entry {name!r}: not a regular file ({entry.strmode})")
                if rel is None or str(rel) == MANIFEST:
                    raise DownloadError(f"unsafe archive entry {name!r}: invalid file name")
                target = dest / rel
                try:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with open(target, "wb") as fh:
                        for block in entry.get_blocks():
                            fh.write(block)
                except OSError as exc:
                    raise DownloadError(f"cannot extract archive entry {name!r} of {archive}: {exc}") from exc
                files.add(rel.as_posix())
    except libarchive.exception.ArchiveError as exc:
        raise DownloadError(f"corrupt archive {archive} (source {source_name!r}): {exc}") from exc
    if not files:
        raise DownloadError(f"corrupt archive {archive} (source {source_name!r}): it holds no files")
    return sorted(files)


# --- command line ------------------------------------------------------------------------


def main(params: dict, source_name: str, out_dir: str) -> list[Path]:
    """CLI entry: fetch params' source ``source_name`` into ``out_dir``; one line per file."""
    source = source_config(params, source_name)
    files = fetch(source, Path(out_dir), mirror_dir(params))
    for path in files:
        print(path)
    return files
