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
