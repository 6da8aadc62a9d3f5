"""The aggregate stage: tables, figures and DVC metrics from the runs (what it writes:
:mod:`pipeline.reporting.aggregate`, which collects the runs and builds every output)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.io import write_bytes, write_text
from pipeline.reporting import significance as sig
from pipeline.reporting.aggregate import build_outputs


def main(
    params: dict[str, Any], runs_dir: str | Path, out_dir: str | Path, efficiency: str | Path | None = None,
    significance: str | Path | None = None,
) -> None:
    """``significance``: the significance stage's CSV; without it the tests are run here, from
    the runs' per-user tables. Either way ``<out>/significance.csv`` is written (with the given
    CSV, the same text)."""
    table = sig.from_csv(significance) if significance else None
    outputs = build_outputs(params, runs_dir, out_dir, efficiency, table)  # everything computed before anything is written
    for path, content in outputs.items():
        if isinstance(content, bytes):
            write_bytes(path, content)
        else:
            write_text(path, content)
        print(f"wrote {path}", flush=True)
