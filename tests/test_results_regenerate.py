"""The committed results/ are exactly what aggregation makes from the committed runs.

Re-runs the aggregate stage on ``runs/`` into memory and compares every file with ``results/``
byte for byte — text files and PNG figures alike (matplotlib's Agg PNGs are byte-stable: no
timestamp, the ``Software`` chunk dropped, style reset to fixed settings, matplotlib pinned):
a table edited by hand, or a run whose metrics changed without re-aggregating, fails here (and
so in CI).

Aggregation reads what git holds: every run's ``metrics.json`` and ``history.csv`` and the
significance stage's ``runs/significance.csv``, so this runs on a bare clone. The
significance stage itself needs the runs' ``per_user.parquet`` (DVC outputs, not in git): where
they are present (after the DAG ran, or ``dvc pull``) the committed CSV is recomputed too; in a
bare clone :func:`test_committed_significance_is_recomputed` is skipped with the reason.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.config import load_params
from pipeline.plan import trained_runs as planned_runs
from pipeline.reporting import significance as sig
from pipeline.reporting.aggregate import build_outputs, run_path, significance_table

ROOT = Path(__file__).resolve().parents[1]
EFFICIENCY = Path("results/efficiency.json")


def _per_user_present(params) -> bool:
    return all(run_path(ROOT / "runs", *run, "per_user.parquet").is_file() for run in planned_runs(params))


def _check(outputs: dict, skip: set[Path] = frozenset()) -> None:
    assert outputs, "aggregation produced nothing"
    for path, content in outputs.items():
        if path in skip:
            continue
        committed = ROOT / path
        assert committed.is_file(), f"{path} is produced by aggregation but not committed"
        if isinstance(content, bytes):
            assert committed.read_bytes() == content, f"{path} differs from what aggregation draws from runs/"
        else:
            assert committed.read_text() == content, f"{path} differs from what aggregation makes of runs/ (edited by hand?)"
    for folder in ("tables", "figures"):
        made = {p for p in outputs if p.parent == Path("results") / folder}
        have = {p.relative_to(ROOT) for p in (ROOT / "results" / folder).glob("*")}
        assert have == made, f"stray or missing files in results/{folder}: {sorted(map(str, have ^ made))}"


def test_committed_results_are_regenerated_exactly(monkeypatch):
    monkeypatch.chdir(ROOT)  # paper_results and results/efficiency.json are relative to the repository root
    params = load_params(ROOT / "params.yaml")
    committed_sig = sig.from_csv(ROOT / "runs" / "significance.csv")
    outputs = build_outputs(params, ROOT / "runs", Path("results"), efficiency=EFFICIENCY, significance=committed_sig)
    assert Path("results/figures/efficiency.png") in outputs
    _check(outputs)


def test_committed_significance_is_recomputed(monkeypatch):
    monkeypatch.chdir(ROOT)
    params = load_params(ROOT / "params.yaml")
    if not _per_user_present(params):
        pytest.skip("runs/*/per_user.parquet not here (DVC outputs: `dvc pull` or run the DAG); "
                    "the other outputs were checked against the committed runs/significance.csv")
    recomputed = sig.to_csv(significance_table(params, ROOT / "runs"))
    assert (ROOT / "runs" / "significance.csv").read_text() == recomputed
    assert sig.from_csv(ROOT / "runs" / "significance.csv").height > 0


def test_efficiency_json_matches_efficiency_md():
    """results/efficiency.json holds exactly the numbers of results/efficiency.md (both written by
    benchmarks/bench_efficiency.py; the md is rendered back from the JSON)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_efficiency", ROOT / "benchmarks" / "bench_efficiency.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    record = json.loads((ROOT / "results" / "efficiency.json").read_text())
    assert bench.render_markdown(record) == (ROOT / "results" / "efficiency.md").read_text()
    assert bench.render_json(record) == (ROOT / "results" / "efficiency.json").read_text()


def test_readme_headline_is_the_generated_table():
    """README.md's results block is results/tables/headline.md (checked byte for byte above);
    `python workflow/scripts/readme_headline.py` copies it after the aggregate stage changed it."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("readme_headline", ROOT / "workflow" / "scripts" / "readme_headline.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    readme = (ROOT / "README.md").read_text()
    assert script.block(readme) == (ROOT / "results" / "tables" / "headline.md").read_text(), (
        "README.md's results block differs from results/tables/headline.md: run python workflow/scripts/readme_headline.py"
    )
