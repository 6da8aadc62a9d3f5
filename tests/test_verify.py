"""pipeline/stages/verify.py: what `make verify` reports about a retrained run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.stages.verify import compare, parse_run, summary_line

METRICS = {"best_epoch": 10, "epochs_trained": 29, "valid": {"recall@20": 0.25, "ndcg@20": 0.125},
           "test": {"recall@20": 0.5, "ndcg@20": 0.375}}
HISTORY = "epoch,loss,test_ndcg@20,test_recall@20,valid_ndcg@20,valid_recall@20\n5,2.5,,,,\n10,2.0,0.375,0.5,0.125,0.25\n"


def run_folder(path: Path, metrics: dict, history: str) -> Path:
    path.mkdir(parents=True)
    (path / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
    (path / "history.csv").write_text(history)
    return path


def test_identical_runs(tmp_path):
    a, b = run_folder(tmp_path / "a", METRICS, HISTORY), run_folder(tmp_path / "b", METRICS, HISTORY)
    report = compare(a, b)
    assert report["metrics_json_identical"] and report["history_csv_identical"]
    assert summary_line("runs/s/m/seed1", report) == "runs/s/m/seed1: byte-identical (metrics.json, history.csv)"


def test_differences_and_a_moved_best_epoch(tmp_path):
    a = run_folder(tmp_path / "a", METRICS, HISTORY)
    moved = {**METRICS, "best_epoch": 5, "test": {"recall@20": 0.5, "ndcg@20": 0.25}}  # 0.375 - 0.125 exactly
    b = run_folder(tmp_path / "b", moved, HISTORY.replace("10,2.0,0.375", "10,1.5,0.375"))
    report = compare(a, b)
    assert not report["metrics_json_identical"] and not report["history_csv_identical"]
    assert report["best_epoch"] == [10, 5]
    assert report["at_best"]["test_ndcg@20"] == 0.125 and report["at_best"]["test_recall@20"] == 0.0
    assert report["over_history"]["loss"] == 0.5 and report["over_history"]["test_ndcg@20"] == 0.0
    line = summary_line("runs/s/m/seed1", report)
    assert "best epoch MOVED 10 -> 5" in line and "ndcg@20 1.25e-01" in line and "loss 5.00e-01" in line


def test_run_folder_names():
    assert parse_run("runs/ml-1m_clean/tvdiff-argsp/seed3") == ("ml-1m_clean", "tvdiff-argsp", 3)
    assert parse_run("/x/runs/ml-1m_clean/diffrec/seed1/") == ("ml-1m_clean", "diffrec", 1)
    with pytest.raises(ValueError, match="not a run folder"):
        parse_run("runs/ml-1m_clean/diffrec")


def test_retrain_runs_the_train_stage_without_copying_the_tuned_run(monkeypatch, tmp_path):
    """A tuned variant's seed-1 run is trained again (the train stage would copy the tune stage's
    run), with the train stage's inputs, and its timing kept out of logs/timing."""
    from pipeline.stages import verify
    from pipeline.config import load_params
    from pipeline.stages import train as run

    calls = []
    monkeypatch.setattr(run, "main", lambda *args, **kwargs: calls.append((args, kwargs)))
    params = load_params(Path(__file__).resolve().parents[1] / "params.yaml")
    verify.retrain(params, "ml-1m_clean", "multivae", 1, tmp_path / "out")
    (args, kwargs), = calls
    assert args[1:] == ("ml-1m_clean", "multivae", 1, "data/prepared/ml-1m_clean", tmp_path / "out", None,
                        "runs/ml-1m_clean/multivae/tuning/selected.json", None)
    assert kwargs["reuse_tuned_run"] is False and kwargs["timing_path"] == tmp_path / "out" / "timing.json"
