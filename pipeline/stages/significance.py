"""The significance stage: paired Wilcoxon tests of every model against DiffRec from the runs'
per-user tables (the only step that reads them), written to ``runs/significance.csv``, which is
committed beside the runs' metrics so that the aggregate stage needs no per-user table.
The tests are :mod:`pipeline.reporting.significance`; the runs are collected by
:mod:`pipeline.reporting.aggregate`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.io import write_text
from pipeline.reporting import significance as sig
from pipeline.reporting.aggregate import significance_table


def main(params: dict[str, Any], runs_dir: str | Path, out: str | Path) -> None:
    write_text(out, sig.to_csv(significance_table(params, runs_dir)))
    print(f"wrote {out}", flush=True)
