"""benchmarks/bench_floor.py's planning and arithmetic: which jobs the whole-table estimate costs,
and the wall time of jobs packed onto cores (the measurements themselves are the script's run)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from pipeline import plan
from pipeline.config import load_params

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("bench_floor", ROOT / "benchmarks" / "bench_floor.py")
bench_floor = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench_floor)


@pytest.mark.parametrize("jobs, cores, wall", [
    ([(10, 1), (10, 1)], 2, 10),               # side by side
    ([(10, 2), (5, 1), (5, 1)], 2, 15),        # the two-thread job first, then the pair
    ([(6, 1), (4, 1), (3, 1), (3, 1)], 2, 9),  # longest first: 3 starts at 4 (ends 7), 3 at 6 (ends 9)
    ([(4, 2), (4, 1)], 1, 8),                  # a job wider than the machine takes all of it
    ([], 2, 0),
])
def test_wall_time_packs_jobs_longest_first(jobs, cores, wall):
    assert bench_floor.wall_time(jobs, cores) == wall


def test_the_table_estimate_costs_every_job_of_the_plan_once():
    params = load_params(ROOT / "params.yaml")
    jobs = bench_floor.table_jobs(params, "ml-1m")
    on_ml1m = lambda split: params["splits"][split]["dataset"] == "ml-1m"  # noqa: E731
    trained = [r for r in plan.trained_runs(params) if on_ml1m(r.split)]
    assert [(j.split, j.model, j.seed) for j in jobs if j.kind == "train"] == [tuple(r) for r in trained]
    tuned = [r for r in plan.tune_runs(params) if on_ml1m(r.split)]
    shared = sum(len(plan.shared_points(params, r.split, r.model)) for r in tuned)
    assert shared == 2  # TV-Diff's grid point of the final configuration on clean and noisy: tvdiff-final's seed-1 runs
    assert sum(j.kind == "tune" for j in jobs) == sum(len(plan.grid_points(params, r.model, r.split)) for r in tuned) - shared > 0
    assert [(j.split, j.model) for j in jobs if j.kind == "embed"] == [e for e in plan.embed_jobs(params) if on_ml1m(e[0])]
    # every train job is costed with its own committed run's schedule
    for job in jobs:
        if job.kind == "train":
            assert job.folder == Path(plan.RUN_DIR.format(split=job.split, model=job.model, seed=job.seed))


def test_a_run_schedule_counts_epochs_and_evaluations(tmp_path):
    (tmp_path / "history.csv").write_text("epoch,loss,valid_recall@20\n1,0.5,\n2,0.4,0.1\n3,0.3,\n4,0.2,0.2\n")
    assert bench_floor.schedule(tmp_path) == (4, 2)
    assert bench_floor.schedule(tmp_path / "absent") is None


def _measurement(epoch_s: float, eval_s: float = 0.0, bits: str = "same") -> dict:
    return {"startup_s": 0.0, "epoch_s": epoch_s, "eval_s": eval_s, "epoch_flops": 0, "eval_flops": 0, "rate": 1.0,
            "state_sha256": bits, "eval_sha256": "metrics"}


def test_threads_are_chosen_for_the_shortest_packed_wall(tmp_path, monkeypatch):
    # one long job that scales (10 epochs of 10 s on 1 thread, 6 s on 2) and four short ones that do
    # not (5 s either way): alone on 2 threads the long job ends at 60 s while the short ones pack
    # into 10 s on the two cores, 70 s in all; on one thread it runs 100 s beside them
    (tmp_path / "history.csv").write_text("epoch,loss\n" + "".join(f"{e},0.1\n" for e in range(1, 11)))
    short = tmp_path / "short"
    short.mkdir()
    (short / "history.csv").write_text("epoch,loss\n1,0.1\n")
    monkeypatch.setattr(bench_floor.plan, "tune_runs", lambda params: [])
    jobs = [bench_floor.Job("train", "s", "long", 1, tmp_path)] + [
        bench_floor.Job("train", "s", "short", seed, short) for seed in range(1, 5)]
    measured = {"long": {1: _measurement(10.0), 2: _measurement(6.0)}, "short": {1: _measurement(5.0), 2: _measurement(5.0)}}
    costed, unknown, _ = bench_floor.cost_jobs({}, jobs, measured, {"long": 2, "short": 1})
    assert [(sec, n) for _, sec, n in costed] == [(60.0, 2)] + [(5.0, 1)] * 4 and unknown == []
    assert bench_floor.wall_time([(sec, n) for _, sec, n in costed], 2) == 70.0
    assert bench_floor.choose_threads({}, jobs, measured, 2) == {"long": 2, "short": 1}
    # a long job that gains little keeps one thread: beside the short ones it ends at 100 s
    measured["long"][2] = _measurement(9.5)
    assert bench_floor.choose_threads({}, jobs, measured, 2) == {"long": 1, "short": 1}


def test_a_model_whose_bits_depend_on_threads_keeps_its_count(tmp_path, monkeypatch):
    # the long job of the test above, the one that gains from two threads, but its weights after
    # the measured epochs differ between 1 and 2 threads: it keeps params.yaml's thread count
    (tmp_path / "history.csv").write_text("epoch,loss\n" + "".join(f"{e},0.1\n" for e in range(1, 11)))
    short = tmp_path / "short"
    short.mkdir()
    (short / "history.csv").write_text("epoch,loss\n1,0.1\n")
    monkeypatch.setattr(bench_floor.plan, "tune_runs", lambda params: [])
    jobs = [bench_floor.Job("train", "s", "long", 1, tmp_path), bench_floor.Job("train", "s", "short", 1, short)]
    params = {"training": {"threads": 2}, "models": {"long": {"threads": 1}, "short": {}}}
    measured = {"long": {1: _measurement(10.0, bits="a"), 2: _measurement(6.0, bits="b")},
                "short": {1: _measurement(5.0), 2: _measurement(5.0)}}
    assert not bench_floor.same_results(measured["long"]) and bench_floor.same_results(measured["short"])
    choice = bench_floor.choose_threads(params, jobs, measured, 2)
    assert choice["long"] == 1  # params.yaml's, although 2 would pack shorter
    measured["long"][2]["state_sha256"] = "a"
    assert bench_floor.choose_threads(params, jobs, measured, 2)["long"] == 2


def test_a_tuned_variant_is_measured_at_a_grid_point_nearest_its_untuned_setting():
    """The benchmark measures a setting the DAG trains: a tuned variant at the grid point sharing
    most hyperparameters with its untuned setting (TV-Diff's untuned setting on ML-1M is the
    authors' lastfm one, bpr on pair batches, which no ML-1M job runs)."""
    params = load_params(ROOT / "params.yaml")
    point = bench_floor.measured_point(params, "tvdiff", "ml-1m_clean")
    assert point in plan.grid_points(params, "tvdiff", "ml-1m_clean") and point["loss_type"] in ("bce", "nll")
    grid = plan.grid_points(params, "hgcf-512", "ml-1m_clean")
    defaults = params["models"]["hgcf-512"]["defaults"]
    assert bench_floor.measured_point(params, "hgcf-512", "ml-1m_clean") == next(
        p for p in grid if all(defaults.get(k) == v for k, v in p.items()))  # its untuned setting is a grid point
    assert bench_floor.measured_point(params, "diffrec", "ml-1m_clean") is None


def test_the_table_parts_put_released_hdrm_and_every_tvdiff_variant_apart():
    params = load_params(ROOT / "params.yaml")
    part = lambda model: bench_floor.table_part(params, model)  # noqa: E731
    first, hdrm, tvdiff = "first", "hdrm", "tvdiff"
    assert set(bench_floor.PARTS) == {first, hdrm, tvdiff}
    assert [part(m) for m in ("hgcf-512", "hdrm-512", "hdrm-512-val")] == [hdrm] * 3
    assert [part(m) for m in ("tvdiff", "tvdiff-argsp", "tvdiff-final", "tvdiff-tuned")] == [tvdiff] * 4
    assert [part(m) for m in ("diffrec", "hgcf", "hdrm", "lightgcn", "ease")] == [first] * 5
