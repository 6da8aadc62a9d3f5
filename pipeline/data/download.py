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

from pipeline.config import ConfigError, SourceConfig, mirror_dir, source_config
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
    replaced only on success.
    """
    out_dir = Path(out_dir)
    if source.archive not in ARCHIVES:
        raise ConfigError(f"sources.{source.name}.archive", f"{source.archive!r} is not allowed; allowed values: {list(ARCHIVES)}")
    algorithm, expected = _checksum(source)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    download: Path | None = None
    try:
        if mirror is not None:
            path = Path(mirror) / source.mirror
            if not path.is_file():
                raise DownloadError(
                    f"source {source.name!r}: mirror file {path} not found (upstream url: {source.url}). "
                    f"Put the upstream file there, point PIPELINE_MIRROR or paths.mirror at a folder "
                    f"that holds it, or set PIPELINE_MIRROR='' (or paths.mirror: null) to download it."
                )
            where = str(path)
        else:
            fd, tmp = tempfile.mkstemp(prefix=f".{out_dir.name}.", suffix=".download", dir=out_dir.parent)
            os.close(fd)
            download = path = Path(tmp)
            _download(source.url, path, retries=retries, timeout=timeout)
            where = f"{path} (downloaded from {source.url})"

        actual = file_digest(path, algorithm)
        if actual != expected:
            raise DownloadError(
                f"source {source.name!r}: {algorithm} mismatch for {where}: "
                f"expected {expected}, actual {actual}"
            )

        if source.archive == "none":
            name = Path(source.mirror).name
            if name == MANIFEST:
                raise DownloadError(f"source {source.name!r}: a data file may not be called {MANIFEST}")
            shutil.copyfile(path, staging / name)
            files = [name]
        else:
            files = _extract(path, staging, source.name)

        write_json(
            staging / MANIFEST,
            {
                "name": source.name,
                "url": source.url,
                "archive": source.archive,
                "checksum": {"algorithm": algorithm, "value": expected},
                "files": files,
            },
        )
        _replace_dir(staging, out_dir)
    finally:
        if download is not None and download.exists():
            download.unlink()
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return [out_dir / f for f in files]


def _checksum(source: SourceConfig) -> tuple[str, str]:
    """(algorithm, expected lower-case hex digest): sha256 if given, else md5."""
    if source.sha256:
        return "sha256", source.sha256.lower()
    if source.md5:
        return "md5", source.md5.lower()
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
