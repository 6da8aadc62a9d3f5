"""The committed results/ are exactly what aggregation makes from the committed run metrics.

Re-runs the aggregate stage on ``runs/*/metrics.json`` (committed to git) into a scratch folder
and compares every file byte for byte with ``results/``: a table edited by hand, or a run whose
metrics changed without re-aggregating, fails here (and so in CI).
"""

from __future__ import annotations

from pathlib import Path

from pipeline.config import load_params
from pipeline.reporting.aggregate import build_outputs

ROOT = Path(__file__).resolve().parents[1]


def test_committed_results_are_regenerated_exactly(monkeypatch):
    monkeypatch.chdir(ROOT)  # paper_results is relative to the repository root
    params = load_params(ROOT / "params.yaml")
    outputs = build_outputs(params, ROOT / "runs", Path("results"))
    assert outputs, "aggregation produced nothing"
    for path, text in outputs.items():
        committed = ROOT / path
        assert committed.is_file(), f"{path} is produced by aggregation but not committed"
        assert committed.read_text() == text, f"{path} differs from what aggregation makes of runs/ (edited by hand?)"
    tables = {p.relative_to(ROOT) for p in (ROOT / "results" / "tables").glob("*")}
    assert tables == {p for p in outputs if p.parent == Path("results/tables")}, "stray or missing tables"

