"""benchmarks/training_time.py: regenerating its tables keeps the rows of runs this machine does
not hold (DVC outputs made elsewhere), in the plan's order, and replaces the rows it can rebuild."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("training_time", ROOT / "benchmarks" / "training_time.py")
training_time = importlib.util.module_from_spec(spec)
spec.loader.exec_module(training_time)

OLD = """# Title

intro | with a pipe

| split | model | setting | selected |
|---|---|---|:---:|
| a | M1 | x = 1 | yes |
| a | M1 | x = 2 |  |
| a | M2 | y = 1 | yes |
| b | M1 | x = 1 | yes |
"""


def test_rows_of_runs_not_here_are_kept_and_the_rest_rebuilt(tmp_path):
    old = tmp_path / "old.md"
    old.write_text(OLD)
    kept = training_time.kept_rows(old, present={("a", "M2")})
    assert kept == {("a", "M1"): ["| a | M1 | x = 1 | yes |", "| a | M1 | x = 2 |  |"],
                    ("b", "M1"): ["| b | M1 | x = 1 | yes |"]}
    new = {("a", "M2"): ["| a | M2 | y = 3 | yes |"]}
    # plan order; a pair neither here nor in the old file has no row; one no longer planned is dropped
    order = [("a", "M2"), ("a", "M1"), ("c", "M3")]
    assert training_time._merged(order, new, kept) == [
        "| a | M2 | y = 3 | yes |", "| a | M1 | x = 1 | yes |", "| a | M1 | x = 2 |  |"]
    assert training_time.kept_rows(tmp_path / "missing.md", set()) == {}


def test_the_threads_column_is_what_the_runs_used():
    params = {"training": {"threads": 2}, "models": {"m": {"threads": 1}}}
    # recorded by the trainer: that count, whatever params.yaml says now
    assert training_time.run_thread_count({"threads": 2}, params, "m") == 2
    # a timing file from before the trainer recorded it: params.yaml's count
    assert training_time.run_thread_count({}, params, "m") == 1
    assert training_time.threads_cell([2, 2, 2]) == "2"
    assert training_time.threads_cell([1, 2, 1]) == "1/2"


def test_minutes_per_run_are_each_runs_epochs_and_evaluations_at_the_rows_rates(tmp_path):
    for seed, history in ((1, "epoch,loss,valid_recall@20\n1,0.5,\n2,0.4,0.1\n"),  # 2 epochs, 1 evaluation
                          (2, "epoch,loss,valid_recall@20\n1,0.5,0.1\n2,0.4,0.2\n3,0.3,\n4,0.2,0.2\n")):  # 4, 3
        (tmp_path / f"seed{seed}").mkdir()
        (tmp_path / f"seed{seed}" / "history.csv").write_text(history)
    folders = {("a", "M"): [tmp_path / "seed1", tmp_path / "seed2", tmp_path / "seed3"]}  # seed 3: no history
    line = "| a | M | 10 | 1 | 30.00 | 60.00 | 1 | 3 | 2 |"
    # seed 1: 2 x 30 + 1 x 60 = 120 s; seed 2: 4 x 30 + 3 x 60 = 300 s; median 210 s = 3.5 min
    assert training_time.with_run_minutes(line, folders) == line + " 3.5 |"
    assert training_time.with_run_minutes(line + " 3.5 |", folders) == line + " 3.5 |"  # already there
    assert training_time.with_run_minutes("| b | M | 10 | 1 | – | 6.00 | 0 | 0 | 1 |", folders) == "| b | M | 10 | 1 | – | 6.00 | 0 | 0 | 1 | – |"
