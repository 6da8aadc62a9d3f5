"""Tests for pipeline.stages.download: mirror copies, checksums, archive safety, HTTP retries.

Everything runs in tmp_path; HTTP tests use a local ThreadingHTTPServer (no internet).
"""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest

from pipeline.config import REPO_ROOT, SourceConfig, SourceFile, load_params, source_config
from pipeline.stages import download
from pipeline.stages.download import DownloadError, fetch, main

PAYLOAD = b"user_id:token\titem_id:token\n1\t2\n3\t4\n" * 50


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def leftovers(parent: Path) -> list[str]:
    """Hidden temporary files/folders the stage may have left beside its output."""
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch):
    monkeypatch.setattr(download, "BACKOFF_S", 0.01)


def make_mirror(tmp_path: Path, rel: str, data: bytes) -> Path:
    mirror = tmp_path / "mirror"
    (mirror / rel).parent.mkdir(parents=True, exist_ok=True)
    (mirror / rel).write_bytes(data)
    return mirror


# --- mirror, plain files -----------------------------------------------------------------


def test_mirror_plain_file_sha256(tmp_path):
    mirror = make_mirror(tmp_path, "recbole/x/data.inter", PAYLOAD)
    src = SourceConfig("s", "https://example.invalid/data.inter", "recbole/x/data.inter", "none", sha256=sha256(PAYLOAD))
    out = tmp_path / "raw" / "s"
    files = fetch(src, out, mirror)
    assert files == [out / "data.inter"]
    assert (out / "data.inter").read_bytes() == PAYLOAD
    manifest = json.loads((out / "SOURCE.json").read_text())
    assert manifest == {
        "name": "s",
        "url": "https://example.invalid/data.inter",
        "archive": "none",
        "checksum": {"algorithm": "sha256", "value": sha256(PAYLOAD)},
        "files": ["data.inter"],
    }
    assert leftovers(out.parent) == []


def test_mirror_plain_file_md5_and_reproducible(tmp_path):
    mirror = make_mirror(tmp_path, "a.txt", PAYLOAD)
    src = SourceConfig("s", "https://example.invalid/a.txt", "a.txt", "none", md5=hashlib.md5(PAYLOAD).hexdigest())
    out = tmp_path / "out"
    fetch(src, out, mirror)
    first = (out / "SOURCE.json").read_bytes()
    assert json.loads(first)["checksum"]["algorithm"] == "md5"
    (out / "stale.txt").write_text("old")  # an old output folder is replaced as a whole
    fetch(src, out, mirror)
    assert sorted(p.name for p in out.iterdir()) == ["SOURCE.json", "a.txt"]
    assert (out / "SOURCE.json").read_bytes() == first


def test_main_uses_params(tmp_path, monkeypatch, capsys):
    mirror = make_mirror(tmp_path, "d/a.txt", PAYLOAD)
    monkeypatch.delenv("PIPELINE_MIRROR", raising=False)
    params = {
        "paths": {"mirror": str(mirror)},
        "sources": {"s": {"url": "https://example.invalid/a.txt", "mirror": "d/a.txt", "archive": "none", "sha256": sha256(PAYLOAD)}},
    }
    out = tmp_path / "out"
    main(params, "s", str(out))
    assert capsys.readouterr().out.splitlines() == [str(out / "a.txt")]


# --- the real mirror ---------------------------------------------------------------------


def test_real_mirror_diffrec_rar(tmp_path, mirror):
    if not (mirror / "diffrec").is_dir():
        pytest.skip("no shared dataset mirror on this machine")
    src = SourceConfig(
        "diffrec-ml-1m-clean",
        "https://github.com/YiyanXu/DiffRec/raw/d35a6c6/datasets/ml-1m_clean.rar",
        "diffrec/ml-1m_clean.rar",
        "rar",
        sha256="407d6f1deac6e373c3a7157ce9cf974fcd42f43967d7f0cfaa25b01bc2521050",
    )
    out = tmp_path / "raw" / "diffrec"
    files = fetch(src, out, mirror)
    names = ["item_emb.npy", "test_list.npy", "train_list.npy", "valid_list.npy"]
    assert files == [out / "ml-1m_clean" / n for n in names]
    train = np.load(out / "ml-1m_clean" / "train_list.npy", allow_pickle=True)
    assert train.shape == (403277, 2)
    assert json.loads((out / "SOURCE.json").read_text())["files"] == [f"ml-1m_clean/{n}" for n in names]


@pytest.mark.parametrize("dataset, n_train, n_test", [("lastfm", 73758, 18440), ("amazon-beauty", 158802, 39700)])
def test_real_mirror_tvdiff(tmp_path, mirror, dataset, n_train, n_test):
    if not (mirror / "tvdiff" / dataset / "train.txt").is_file():
        pytest.skip("no shared dataset mirror on this machine")
    src = source_config(load_params(REPO_ROOT / "params.yaml"), f"tvdiff-{dataset}")
    out = tmp_path / "raw" / dataset
    assert fetch(src, out, mirror) == [out / "test.txt", out / "train.txt"]
    for name, rows in (("train.txt", n_train), ("test.txt", n_test)):
        data = (out / name).read_bytes()
        assert data.count(b"\r\n") == data.count(b"\n") == rows


# --- checksum and mirror failures --------------------------------------------------------


def test_checksum_mismatch_leaves_nothing(tmp_path):
    mirror = make_mirror(tmp_path, "a.txt", PAYLOAD)
    wrong = "0" * 64
    src = SourceConfig("s", "https://example.invalid/a.txt", "a.txt", "none", sha256=wrong)
    out = tmp_path / "raw" / "s"
    with pytest.raises(DownloadError) as err:
        fetch(src, out, mirror)
    msg = str(err.value)
    assert wrong in msg and sha256(PAYLOAD) in msg and str(mirror / "a.txt") in msg
    assert not out.exists()
    assert leftovers(out.parent) == []
    # fixing the checksum and running again works
    fixed = SourceConfig("s", src.url, src.mirror, "none", sha256=sha256(PAYLOAD))
    assert fetch(fixed, out, mirror) == [out / "a.txt"]


def test_mirror_missing_file(tmp_path):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    src = SourceConfig("s", "https://example.invalid/a.rar", "diffrec/a.rar", "rar", sha256="0" * 64)
    out = tmp_path / "out"
    with pytest.raises(DownloadError) as err:
        fetch(src, out, mirror)
    msg = str(err.value)
    assert str(mirror / "diffrec" / "a.rar") in msg
    assert "https://example.invalid/a.rar" in msg and "PIPELINE_MIRROR" in msg
    assert not out.exists() and leftovers(tmp_path) == []


# --- sources of several files -----------------------------------------------------------

TRAIN, TEST = b"1\t2\t5\r\n1\t3\t4\r\n", b"1\t4\t1\r\n"


def two_files(tmp_path: Path, test_sha256: str | None = None) -> tuple[Path, SourceConfig]:
    """A mirror holding a given train/test pair, and the source naming both (sha256 of test.txt
    replaceable to make it wrong)."""
    mirror = make_mirror(tmp_path, "tv/ds/train.txt", TRAIN)
    (mirror / "tv" / "ds" / "test.txt").write_bytes(TEST)
    files = (
        SourceFile("https://example.invalid/ds/train.txt", "tv/ds/train.txt", sha256=sha256(TRAIN)),
        SourceFile("https://example.invalid/ds/test.txt", "tv/ds/test.txt", sha256=test_sha256 or sha256(TEST)),
    )
    return mirror, SourceConfig("tv", files=files)


def test_multi_file_source_through_mirror(tmp_path):
    mirror, src = two_files(tmp_path)
    out = tmp_path / "raw" / "tv"
    assert fetch(src, out, mirror) == [out / "test.txt", out / "train.txt"]
    assert (out / "train.txt").read_bytes() == TRAIN and (out / "test.txt").read_bytes() == TEST  # CRLF kept
    first = (out / "SOURCE.json").read_bytes()
    assert json.loads(first) == {
        "name": "tv",
        "archive": "none",
        "files": ["test.txt", "train.txt"],
        "sources": [
            {"file": "train.txt", "url": "https://example.invalid/ds/train.txt",
             "checksum": {"algorithm": "sha256", "value": sha256(TRAIN)}},
            {"file": "test.txt", "url": "https://example.invalid/ds/test.txt",
             "checksum": {"algorithm": "sha256", "value": sha256(TEST)}},
        ],
    }
    fetch(src, out, mirror)
    assert (out / "SOURCE.json").read_bytes() == first
    assert leftovers(out.parent) == []


def test_multi_file_checksum_mismatch_leaves_nothing(tmp_path):
    wrong = "f" * 64
    mirror, src = two_files(tmp_path, test_sha256=wrong)
    out = tmp_path / "raw" / "tv"
    with pytest.raises(DownloadError) as err:
        fetch(src, out, mirror)
    msg = str(err.value)
    assert "source 'tv'" in msg and str(mirror / "tv" / "ds" / "test.txt") in msg
    assert wrong in msg and sha256(TEST) in msg
    assert not out.exists() and leftovers(out.parent) == []
    # an old output folder is kept when the new one fails
    good = two_files(tmp_path)[1]
    fetch(good, out, mirror)
    with pytest.raises(DownloadError):
        fetch(src, out, mirror)
    assert sorted(p.name for p in out.iterdir()) == ["SOURCE.json", "test.txt", "train.txt"]


def test_multi_file_missing_and_clashing(tmp_path):
    mirror, src = two_files(tmp_path)
    (mirror / "tv" / "ds" / "test.txt").unlink()
    with pytest.raises(DownloadError, match="test.txt not found.*https://example.invalid/ds/test.txt"):
        fetch(src, tmp_path / "out", mirror)
    same = SourceConfig("tv", files=(src.files[0], SourceFile("https://example.invalid/x", "other/train.txt", sha256="0" * 64)))
    with pytest.raises(DownloadError, match="same name"):
        fetch(same, tmp_path / "out", mirror)
    assert not (tmp_path / "out").exists()


def test_main_multi_file_source(tmp_path, monkeypatch, capsys):
    mirror, src = two_files(tmp_path)
    monkeypatch.delenv("PIPELINE_MIRROR", raising=False)
    files = [{"url": f.url, "mirror": f.mirror, "sha256": f.sha256} for f in src.files]
    params = {"paths": {"mirror": str(mirror)}, "sources": {"tv": {"files": files}}}
    out = tmp_path / "out"
    main(params, "tv", str(out))
    assert capsys.readouterr().out.splitlines() == [str(out / "test.txt"), str(out / "train.txt")]


# --- archives ----------------------------------------------------------------------------


def zip_bytes(tmp_path: Path, entries: dict[str, bytes]) -> bytes:
    path = tmp_path / "build.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in entries.items():
            zf.writestr(zipfile.ZipInfo(name), data)
    data = path.read_bytes()
    path.unlink()
    return data


def test_zip_extraction(tmp_path):
    data = zip_bytes(tmp_path, {"top/a.txt": b"a", "top/sub/b.txt": b"b"})
    mirror = make_mirror(tmp_path, "g/x.zip", data)
    src = SourceConfig("z", "https://example.invalid/x.zip", "g/x.zip", "zip", sha256=sha256(data))
    out = tmp_path / "out"
    assert fetch(src, out, mirror) == [out / "top/a.txt", out / "top/sub/b.txt"]
    assert (out / "top/sub/b.txt").read_bytes() == b"b"


@pytest.mark.parametrize("evil", ["../evil.txt", "/abs.txt", "ok/../../evil.txt"])
def test_zip_unsafe_entries_refused(tmp_path, evil):
    data = zip_bytes(tmp_path, {"fine.txt": b"fine", evil: b"evil"})
    mirror = make_mirror(tmp_path, "x.zip", data)
    src = SourceConfig("z", "https://example.invalid/x.zip", "x.zip", "zip", sha256=sha256(data))
    work = tmp_path / "work"
    out = work / "raw" / "z"
    with pytest.raises(DownloadError, match="unsafe archive entry"):
        fetch(src, out, mirror)
    assert not out.exists()
    assert leftovers(out.parent) == []
    assert list(out.parent.iterdir()) == []  # nothing written beside out_dir (../evil.txt)
    assert not (work / "evil.txt").exists() and not Path("/abs.txt").exists()


def test_corrupt_archive(tmp_path):
    data = np.random.default_rng(0).bytes(4096)
    mirror = make_mirror(tmp_path, "x.zip", data)
    src = SourceConfig("z", "https://example.invalid/x.zip", "x.zip", "zip", sha256=sha256(data))
    out = tmp_path / "raw" / "z"
    with pytest.raises(DownloadError, match="corrupt"):
        fetch(src, out, mirror)
    assert not out.exists() and leftovers(out.parent) == []


# --- HTTP --------------------------------------------------------------------------------


class Server:
    """A local HTTP server; ``state`` lets a test change what the flaky routes do."""

    def __init__(self):
        self.hits: dict[str, int] = {}
        self.state = {"fail_500": 2, "truncate": True}
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                """Keep pytest output quiet: the server logs nothing."""

            def do_GET(self):
                server.hits[self.path] = server.hits.get(self.path, 0) + 1
                if self.path == "/redirect":
                    self.send_response(302)
                    self.send_header("Location", "/good.inter")
                    self.end_headers()
                elif self.path == "/good.inter":
                    self.body(PAYLOAD)
                elif self.path == "/flaky.inter" and server.hits[self.path] <= server.state["fail_500"]:
                    self.send_error(500, "boom")
                elif self.path == "/flaky.inter":
                    self.body(PAYLOAD)
                elif self.path == "/short.inter" and server.state["truncate"]:
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(PAYLOAD)))
                    self.end_headers()
                    self.wfile.write(PAYLOAD[:100])
                elif self.path == "/short.inter":
                    self.body(PAYLOAD)
                else:
                    self.send_error(404, "not here")

            def body(self, data: bytes):
                assert self.headers["User-Agent"].startswith("diffrec-pipeline")
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()

    def source(self, route: str, digest: str = sha256(PAYLOAD)) -> SourceConfig:
        return SourceConfig("h", f"http://127.0.0.1:{self.port}{route}", "x/data.inter", "none", sha256=digest)


@pytest.fixture
def server():
    s = Server()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


def test_http_good_file_and_redirect(tmp_path, server):
    out = tmp_path / "raw" / "h"
    assert fetch(server.source("/good.inter"), out, None) == [out / "data.inter"]
    assert (out / "data.inter").read_bytes() == PAYLOAD
    out2 = tmp_path / "raw" / "h2"
    fetch(server.source("/redirect"), out2, None)
    assert (out2 / "data.inter").read_bytes() == PAYLOAD
    assert leftovers(out.parent) == []


def test_http_404_is_final(tmp_path, server):
    out = tmp_path / "raw" / "h"
    src = server.source("/missing.inter")
    with pytest.raises(DownloadError) as err:
        fetch(src, out, None, retries=3)
    assert "404" in str(err.value) and src.url in str(err.value)
    assert server.hits["/missing.inter"] == 1  # not retried
    assert not out.exists() and leftovers(out.parent) == []


def test_http_500_retried(tmp_path, server):
    out = tmp_path / "raw" / "h"
    src = server.source("/flaky.inter")
    with pytest.raises(DownloadError) as err:  # 2 failures, but only 1 retry allowed
        fetch(src, out, None, retries=1)
    assert "500" in str(err.value) and src.url in str(err.value)
    assert not out.exists() and leftovers(out.parent) == []
    server.hits.clear()
    assert fetch(src, out, None, retries=3) == [out / "data.inter"]
    assert server.hits["/flaky.inter"] == 3
    assert (out / "data.inter").read_bytes() == PAYLOAD


def test_http_truncated(tmp_path, server):
    out = tmp_path / "raw" / "h"
    src = server.source("/short.inter")
    with pytest.raises(DownloadError) as err:
        fetch(src, out, None, retries=1, timeout=5)
    assert f"truncated: got 100 of {len(PAYLOAD)} bytes" in str(err.value)
    assert not out.exists() and leftovers(out.parent) == []
    server.state["truncate"] = False
    fetch(src, out, None, retries=1, timeout=5)
    assert (out / "data.inter").read_bytes() == PAYLOAD


def test_http_checksum_mismatch(tmp_path, server):
    out = tmp_path / "raw" / "h"
    with pytest.raises(DownloadError) as err:
        fetch(server.source("/good.inter", digest="f" * 64), out, None)
    assert "f" * 64 in str(err.value) and sha256(PAYLOAD) in str(err.value)
    assert not out.exists() and leftovers(out.parent) == []


def test_zip_symlink_refused(tmp_path):
    path = tmp_path / "build.zip"
    with zipfile.ZipFile(path, "w") as zf:
        info = zipfile.ZipInfo("link")
        info.create_system = 3  # unix, so the mode bits below are honoured
        info.external_attr = (0o120777 << 16)  # S_IFLNK
        zf.writestr(info, "/etc/passwd")
    data = path.read_bytes()
    path.unlink()
    mirror = make_mirror(tmp_path, "x.zip", data)
    src = SourceConfig("z", "https://example.invalid/x.zip", "x.zip", "zip", sha256=sha256(data))
    out = tmp_path / "raw" / "z"
    with pytest.raises(DownloadError, match="unsafe archive entry 'link'"):
        fetch(src, out, mirror)
    assert not out.exists() and leftovers(out.parent) == []
