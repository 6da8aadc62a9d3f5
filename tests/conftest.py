"""Shared pytest fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pipeline.config import load_params, mirror_dir

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def mirror() -> Path:
    """The dataset mirror the pipeline itself reads: $PIPELINE_MIRROR, else params.yaml's
    ``paths.mirror`` (relative to the repository). A test that needs a file in it skips when the
    file is absent; none hard-codes a machine's path."""
    return mirror_dir(load_params(ROOT / "params.yaml")) or ROOT / "no-mirror-configured"


def extract_diffrec_release(rar: Path, dest: Path) -> Path:
    """Extract one of DiffRec's RAR5 archives into ``dest`` with libarchive; returns ``dest``."""
    import libarchive

    with libarchive.file_reader(str(rar)) as archive:
        for entry in archive:
            if entry.isdir:  # libarchive's extract_file fails on the directory entry
                continue
            path = dest / entry.pathname
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "wb") as fh:
                for block in entry.get_blocks():
                    fh.write(block)
    return dest


@pytest.fixture(scope="session")
def diffrec_ml1m(tmp_path_factory, mirror):
    """``diffrec_ml1m(setting)``: folder with DiffRec's released ML-1M split ('clean' or 'noisy').

    Extracted once per session from ``<mirror>/diffrec/ml-1m_<setting>.rar``;
    the calling test is skipped when the archive is absent.
    """
    extracted: dict[str, Path] = {}

    def get(setting: str) -> Path:
        if setting not in extracted:
            rar = mirror / "diffrec" / f"ml-1m_{setting}.rar"
            if not rar.is_file():
                pytest.skip(f"{rar} not available")
            extracted[setting] = extract_diffrec_release(rar, tmp_path_factory.mktemp(f"diffrec-ml-1m-{setting}"))
        return extracted[setting]

    return get


@pytest.fixture(autouse=True, scope="module")
def restore_torch_globals():
    """train_run sets the thread count and deterministic mode process-wide; undo that afterwards."""
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors: one intra-op thread is fastest and immune to a busy machine (a module asks for
    it with ``pytestmark = pytest.mark.usefixtures("one_thread")``)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
