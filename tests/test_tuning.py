"""The tune stage: grid points, selection on validation, resume of a killed grid, config errors."""

from __future__ import annotations

import copy
import json

import polars as pl
import pytest

from pipeline.config import ConfigError, check_schema, check_semantics, hyperparameters, load_params
from pipeline import plan
from pipeline.plan import RUN_FILES, grid_points, tune_runs
from pipeline.data.dataset import load_interactions
from pipeline.stages.tune import main as tune
from pipeline.training.selection import SELECTED_FILE, read_selected, select
from pipeline.training.fitting import fit
from pipeline.training.trainer import format_duration
from pipeline.stages.train import main as train
from planted import write_planted
from test_trainer import HYPER, N_ITEMS, N_USERS

from pathlib import Path

E2E_PARAMS = Path(__file__).resolve().parent / "e2e" / "params.yaml"
SPLIT = "ml-100k_clean"  # a split name the e2e params know; the data is the planted one


def params_with_grid(grid: dict) -> dict:
    params = load_params(E2E_PARAMS)
    params["models"]["diffrec"] = {"defaults": {**HYPER, "epochs": 4}, "grid": grid}
    params["training"].update(threads=1, eval_every=2, patience=4, select_metric="recall@10", checkpoint_every=2)
    params["evaluation"].update(topk=[5, 10], batch_size=25)
    return params


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_planted(tmp_path_factory.mktemp("planted"), N_USERS, N_ITEMS, 3)


def test_grid_points_are_the_product_in_written_order():
    params = params_with_grid({"lr": [0.1, 0.01], "dims": [[8], [16]]})
    assert grid_points(params, "diffrec", SPLIT) == [
        {"lr": 0.1, "dims": [8]}, {"lr": 0.1, "dims": [16]}, {"lr": 0.01, "dims": [8]}, {"lr": 0.01, "dims": [16]},
    ]
    params["models"]["diffrec"].pop("grid")
    assert grid_points(params, "diffrec", SPLIT) == []


def test_a_list_of_subgrids_is_the_union_of_their_products_in_order():
    # settings that only go together (a loss form with its own schedule) in sub-grids of their own
    params = params_with_grid([{"lr": [0.1, 0.01], "steps": [5]}, {"steps": [10], "noise_scale": [0.2]}, {"lr": [0.01], "steps": [5]}])
    check_schema(params)
    check_semantics(params)
    assert grid_points(params, "diffrec", SPLIT) == [
        {"lr": 0.1, "steps": 5}, {"lr": 0.01, "steps": 5}, {"steps": 10, "noise_scale": 0.2},  # the repeated point once
    ]
    assert plan.grid_keys(params, "diffrec", SPLIT) == ["lr", "steps", "noise_scale"]
    # a point leaves what its sub-grid does not set at the variant's value
    assert hyperparameters(params, "diffrec", SPLIT, {"steps": 10, "noise_scale": 0.2})["lr"] == HYPER["lr"]
    bad = copy.deepcopy(params)
    bad["models"]["diffrec"]["grid"][1]["no_such_knob"] = [1]
    with pytest.raises(ConfigError, match=r"models\.diffrec\.grid\.no_such_knob.*unknown hyperparameter"):
        check_semantics(bad)
    for empty in ([], [{}], [{"lr": [0.1]}, {}]):
        bad["models"]["diffrec"]["grid"] = empty
        with pytest.raises(ConfigError, match=r"models\.diffrec\.grid"):
            check_schema(bad)


def test_select_takes_the_best_validation_value_and_the_first_on_ties():
    results = [{"valid": {"recall@20": v}} for v in (0.1, 0.3, 0.3, 0.2)]
    assert select([{}] * 4, results, "recall@20") == 1


def test_grid_errors_name_the_key():
    base = load_params(E2E_PARAMS)
    tuned = sorted({v for _, v, _ in tune_runs(base)})
    assert tuned, "the e2e params tune at least one baseline"
    variant = tuned[0]

    bad = copy.deepcopy(base)
    bad["models"][variant]["grid"] = {"no_such_knob": [1, 2]}
    with pytest.raises(ConfigError, match=rf"models\.{variant}\.grid\.no_such_knob.*unknown hyperparameter"):
        check_semantics(bad)


def test_a_grid_makes_a_tune_stage_with_the_first_seed_the_variant_runs_with():
    params = copy.deepcopy(load_params(E2E_PARAMS))
    params["experiments"] = [{"splits": [SPLIT], "models": ["diffrec", "mf"], "seeds": [3, 1]}]
    assert tune_runs(params) == [(SPLIT, "mf", 3)]
    params["models"]["diffrec"]["grid"] = {"lr": [0.1, 0.01]}
    assert tune_runs(params) == [(SPLIT, "diffrec", 3), (SPLIT, "mf", 3)]


def test_a_splits_own_grid_replaces_the_variants_there(data_dir):
    """models.<v>.per_split.<split>.grid replaces models.<v>.grid on that split ({}: not tuned
    there): the tune stages, the train commands and inputs, the params a job reads and the key an
    error names follow it; on the other splits the variant's grid holds."""
    params = copy.deepcopy(load_params(E2E_PARAMS))
    other = next(s for s in params["splits"] if s != SPLIT)
    params["experiments"] = [{"splits": [SPLIT, other], "models": ["diffrec"], "seeds": [2]}]
    params["models"]["diffrec"]["grid"] = {"lr": [0.1, 0.01]}
    params["models"]["diffrec"]["per_split"] = {SPLIT: {"steps": 7, "grid": {"noise_scale": [0.1, 0.2, 0.3]}}}
    check_semantics(params)
    assert grid_points(params, "diffrec", SPLIT) == [{"noise_scale": v} for v in (0.1, 0.2, 0.3)]
    assert grid_points(params, "diffrec", other) == [{"lr": 0.1}, {"lr": 0.01}]
    assert tune_runs(params) == [(SPLIT, "diffrec", 2), (other, "diffrec", 2)]
    keys = plan.model_params(params, SPLIT, "diffrec")
    assert f"models.diffrec.per_split.{SPLIT}" in keys and "models.diffrec.grid" not in keys
    assert "models.diffrec.grid" in plan.model_params(params, other, "diffrec")
    # the split's overrides are hyperparameters; its grid is not one
    defaults = params["models"]["diffrec"]["defaults"]
    assert hyperparameters(params, "diffrec", SPLIT, {"noise_scale": 0.2}) == {**defaults, "steps": 7, "noise_scale": 0.2}
    # the grid's identity (what its kept points depend on) holds the split's overrides, not its grid
    from pipeline.stages.tune import grid_identity

    def identity(p):
        return grid_identity(p, SPLIT, "diffrec", 2, str(data_dir), None, {})

    wider, other_steps = copy.deepcopy(params), copy.deepcopy(params)
    wider["models"]["diffrec"]["per_split"][SPLIT]["grid"]["noise_scale"].append(0.4)
    other_steps["models"]["diffrec"]["per_split"][SPLIT]["steps"] = 8
    assert identity(wider) == identity(params) != identity(other_steps)

    bad = copy.deepcopy(params)
    bad["models"]["diffrec"]["per_split"][SPLIT]["grid"] = {"no_such_knob": [1]}
    with pytest.raises(ConfigError, match=rf"models\.diffrec\.per_split\.{SPLIT}\.grid\.no_such_knob.*unknown hyperparameter"):
        check_semantics(bad)
    bad["models"]["diffrec"]["per_split"][SPLIT]["grid"] = {"lr": 0.1}
    with pytest.raises(ConfigError, match=rf"models\.diffrec\.per_split\.{SPLIT}\.grid\.lr.*array"):
        check_schema(bad)

    # {}: the split is not tuned; its runs read no tune stage
    params["models"]["diffrec"]["per_split"][SPLIT]["grid"] = {}
    check_semantics(params)
    assert not plan.is_tuned(params, "diffrec", SPLIT) and plan.is_tuned(params, "diffrec", other)
    assert tune_runs(params) == [(other, "diffrec", 2)]
    untuned, tuned = plan.Run(SPLIT, "diffrec", 2), plan.Run(other, "diffrec", 2)
    assert "--tuned" not in plan.train_command(params, untuned) and "--tuned" in plan.train_command(params, tuned)
    assert plan.TUNE_DIR.format(split=SPLIT, model="diffrec") not in plan.train_inputs(params, untuned)
    assert plan.TUNE_DIR.format(split=other, model="diffrec") in plan.train_inputs(params, tuned)


def test_tune_selects_on_validation_and_train_uses_the_selection(data_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # timing files go to ./logs
    # lr 1e-7 cannot learn in 4 epochs: the grid must pick the working learning rate
    params = params_with_grid({"lr": [1e-7, 0.02]})
    out = tmp_path / "tuning"
    selected = tune(params, SPLIT, "diffrec", 3, str(data_dir), str(out))
    assert selected["hyper"] == {"lr": 0.02} and selected["point"] == 1 and selected["seed"] == 3
    grid = pl.read_csv(out / "grid.csv")
    assert grid["point"].to_list() == [0, 1] and grid["selected"].to_list() == [False, True]
    values = grid["valid_recall@10"].to_list()
    assert values[1] > values[0] and selected["valid"] == values[1]
    for i in (0, 1):
        assert json.loads((out / f"point{i}" / "metrics.json").read_text())["seed"] == 3
    assert read_selected(out / SELECTED_FILE) == {"lr": 0.02}

    # only the selected point keeps its model
    assert (out / "point1" / "model.pt").exists() and not (out / "point0" / "model.pt").exists()

    # the train stage: the tuning seed's run is the selected point's run, copied ...
    capsys.readouterr()
    metrics = train(params, SPLIT, "diffrec", 3, str(data_dir), str(tmp_path / "seed3"), tuned_path=str(out / SELECTED_FILE))
    assert "copied, not retrained" in capsys.readouterr().out
    assert metrics == json.loads((out / "point1" / "metrics.json").read_text())
    # ... and a real retraining of that setting and seed gives the same bytes
    fit(params, SPLIT, "diffrec", 3, load_interactions(data_dir), tmp_path / "retrained", "t", tmp_path / "t.json", tuned={"lr": 0.02})
    for name in RUN_FILES:
        assert (tmp_path / "retrained" / name).read_bytes() == (tmp_path / "seed3" / name).read_bytes(), name
    # another seed trains with the selected setting
    other = train(params, SPLIT, "diffrec", 1, str(data_dir), str(tmp_path / "seed1"), tuned_path=str(out / SELECTED_FILE))
    assert other != metrics and other["seed"] == 1
    with pytest.raises(ValueError, match="--tuned"):
        train(params, SPLIT, "diffrec", 3, str(data_dir), str(tmp_path / "x"))

    # a second start keeps every finished point
    capsys.readouterr()
    assert tune(params, SPLIT, "diffrec", 3, str(data_dir), str(out)) == selected
    assert capsys.readouterr().out.count("already finished: kept") == 2
    # ... but not a point whose setting changed
    params["models"]["diffrec"]["grid"] = {"lr": [1e-7, 0.03]}
    capsys.readouterr()
    again = tune(params, SPLIT, "diffrec", 3, str(data_dir), str(out))
    printed = capsys.readouterr().out
    assert printed.count("already finished: kept") == 1
    assert again["hyper"] == {"lr": 0.03}
    # the kept point's timing record gives the ETA of the one left to train
    record = json.loads((tmp_path / "logs" / "timing" / f"{SPLIT}_diffrec_tune_point0.json").read_text())
    mean = format_duration(record["train_seconds_total"] + record["eval_seconds_total"])
    assert f"grid point 2/2 {{'lr': 0.03}}: eta ~{mean} for the 1 point(s) still to train (mean {mean} per point)" in printed


def test_tune_with_subgrids_writes_every_hyperparameter_column(data_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    params = params_with_grid([{"lr": [1e-7]}, {"lr": [0.02], "steps": [3]}])
    out = tmp_path / "tuning"
    selected = tune(params, SPLIT, "diffrec", 3, str(data_dir), str(out))
    assert selected["hyper"] == {"lr": 0.02, "steps": 3} and selected["point"] == 1
    grid = pl.read_csv(out / "grid.csv", schema_overrides={"lr": pl.String, "steps": pl.String})
    assert grid.select("point", "lr", "steps", "selected").rows() == [(0, "1e-07", None, False), (1, "0.02", "3", True)]
    assert read_selected(out / SELECTED_FILE) == {"lr": 0.02, "steps": 3}


def test_a_grid_made_with_other_params_code_or_inputs_starts_over(data_dir, tmp_path, capsys, monkeypatch):
    """Resumed by its own command, the stage keeps finished points only for the same code, params
    (the grid aside), inputs and seed, as its identity record says; a folder without a record
    (made elsewhere) starts over too."""
    import shutil

    from pipeline.stages import tune as stage

    monkeypatch.chdir(tmp_path)
    params = params_with_grid({"lr": [1e-7, 0.02]})
    out = tmp_path / "tuning"
    tune(params, SPLIT, "diffrec", 3, str(data_dir), str(out))
    record = tmp_path / "logs" / "tune" / SPLIT / "diffrec.grid-identity"
    assert record.read_text() == stage.grid_identity(params, SPLIT, "diffrec", 3, str(data_dir), None, {})

    def kept(p, data=str(data_dir), seed=3):
        capsys.readouterr()
        tune(p, SPLIT, "diffrec", seed, data, str(out))
        text = capsys.readouterr().out
        return text.count("already finished: kept"), "starting it over" in text

    assert kept(params) == (2, False)
    other = copy.deepcopy(params)
    other["training"]["patience"] = 3
    assert kept(other) == (0, True)
    assert kept(other) == (2, False)  # the grid made under patience 3 is now the record's
    copied = tmp_path / "copied"
    shutil.copytree(data_dir, copied)
    assert kept(other, data=str(copied)) == (2, False)  # the same bytes elsewhere: the same inputs
    stats = json.loads((copied / "stats.json").read_text())
    (copied / "stats.json").write_text(json.dumps({**stats, "note": "changed"}))
    assert kept(other, data=str(copied)) == (0, True)
    monkeypatch.setattr(stage, "job_code", lambda *a: ["pipeline/stages/train.py"])  # other code
    assert kept(other, data=str(copied)) == (0, True)
    record.unlink()
    assert kept(other, data=str(copied)) == (0, True)


def params_with_a_fixed_twin() -> dict:
    """diffrec tuned on lr {1e-7, 0.02} and diffrec-fixed, untuned at lr 0.02 (grid point 1), both
    planned with seeds 3 and 1 on SPLIT: the grid runs with seed 3."""
    params = params_with_grid({"lr": [1e-7, 0.02]})
    params["models"]["diffrec-fixed"] = {"class": "diffrec", "threads": params["models"]["diffrec"].get("threads", 1),
                                         "defaults": {**params["models"]["diffrec"]["defaults"], "lr": 0.02}}
    params["models"]["diffrec"]["threads"] = params["models"]["diffrec-fixed"]["threads"]
    params["experiments"] = [{"splits": [SPLIT], "models": ["diffrec", "diffrec-fixed"], "seeds": [3, 1]}]
    check_semantics(params)
    return params


def test_a_grid_point_that_another_variants_run_already_is_copied_not_trained(data_dir, tmp_path, capsys, monkeypatch):
    """A grid point with the setting and seed of another variant's planned run on the split (that
    variant untuned there) is that run: the plan makes the run an input of the tune job, and the
    stage copies it (metrics.json naming the tuned variant) instead of training it; the copy has
    the bytes a training of the point gives."""
    from pipeline.stages import tune as stage
    from pipeline.stages.dvc_yaml import render

    monkeypatch.chdir(tmp_path)
    params = params_with_a_fixed_twin()
    source = plan.Run(SPLIT, "diffrec-fixed", 3)
    assert plan.shared_points(params, SPLIT, "diffrec") == {1: source}
    folder = plan.RUN_DIR.format(**source._asdict())
    assert all(f"{folder}/{name}" in plan.tune_inputs(params, plan.Run(SPLIT, "diffrec", 3)) for name in RUN_FILES)
    assert f"{folder}/metrics.json" in render(params)  # a dependency of the tune stage in dvc.yaml too
    # the grid's seed is the one shared; another seed, thread count or setting is not the same run
    other = copy.deepcopy(params)
    other["experiments"][0]["seeds"] = [1, 3]
    assert plan.shared_points(other, SPLIT, "diffrec") == {1: plan.Run(SPLIT, "diffrec-fixed", 1)}
    other["experiments"] = [{"splits": [SPLIT], "models": ["diffrec"], "seeds": [3]},
                            {"splits": [SPLIT], "models": ["diffrec-fixed"], "seeds": [1]}]
    assert plan.shared_points(other, SPLIT, "diffrec") == {}
    other = copy.deepcopy(params)
    other["models"]["diffrec-fixed"]["threads"] = 2
    assert plan.shared_points(other, SPLIT, "diffrec") == {}
    other = copy.deepcopy(params)
    other["models"]["diffrec-fixed"]["defaults"]["lr"] = 0.03
    assert plan.shared_points(other, SPLIT, "diffrec") == {}

    # the stage fails clearly while the run is missing
    with pytest.raises(FileNotFoundError, match="train diffrec-fixed seed 3"):
        tune(params, SPLIT, "diffrec", 3, str(data_dir), str(tmp_path / "tuning"))
    train(params, SPLIT, "diffrec-fixed", 3, str(data_dir), folder)
    trained = []
    real_fit = stage.fit
    monkeypatch.setattr(stage, "fit", lambda *a, **k: trained.append(k["tuned"]) or real_fit(*a, **k))
    capsys.readouterr()
    out = tmp_path / "tuning"
    selected = tune(params, SPLIT, "diffrec", 3, str(data_dir), str(out))
    assert trained == [{"lr": 1e-7}] and selected["point"] == 1
    assert "the same run as diffrec-fixed seed 3" in capsys.readouterr().out
    retrained = tmp_path / "retrained"
    fit(params, SPLIT, "diffrec", 3, load_interactions(data_dir), retrained, "t", tmp_path / "t.json", tuned={"lr": 0.02})
    for name in RUN_FILES:
        assert (out / "point1" / name).read_bytes() == (retrained / name).read_bytes(), name
    assert json.loads((out / "point1" / "metrics.json").read_text())["model"] == "diffrec"
    assert (tmp_path / "logs" / "timing" / f"{SPLIT}_diffrec_tune_point1.json").exists()


def test_a_later_seed_whose_selected_setting_is_another_variants_run_is_copied(data_dir, tmp_path, capsys, monkeypatch):
    """When the tune stage selects a point that another variant's planned runs already are (same
    split and setting), the tuned variant's run of another seed is that variant's run of the seed:
    the plan makes it an input of the train job, and the stage copies it instead of training it;
    the copy has the bytes a training gives. With another point selected, the seed is trained."""
    from pipeline.stages import train as stage
    from pipeline.stages.dvc_yaml import render

    monkeypatch.chdir(tmp_path)
    params = params_with_a_fixed_twin()
    source = plan.Run(SPLIT, "diffrec-fixed", 1)
    assert plan.tune_seed(params, SPLIT, "diffrec") == 3
    assert plan.twin_runs(params, SPLIT, "diffrec", 1) == {1: source}
    folder = plan.RUN_DIR.format(**source._asdict())
    assert all(f"{folder}/{name}" in plan.train_inputs(params, plan.Run(SPLIT, "diffrec", 1)) for name in RUN_FILES)
    assert not any("diffrec-fixed" in p for p in plan.train_inputs(params, plan.Run(SPLIT, "diffrec", 3)))  # the grid's seed: the tuning folder
    assert f"{folder}/metrics.json" in render(params).split(f"train-{SPLIT}-diffrec-1:")[1].split("\n\n")[0]  # dvc.yaml too

    for seed in (3, 1):
        train(params, SPLIT, "diffrec-fixed", seed, str(data_dir), plan.RUN_DIR.format(split=SPLIT, model="diffrec-fixed", seed=seed))
    tuning = tmp_path / "tuning"
    assert tune(params, SPLIT, "diffrec", 3, str(data_dir), str(tuning))["point"] == 1
    selected = str(tuning / SELECTED_FILE)
    trained = []
    real_fit = stage.fit
    monkeypatch.setattr(stage, "fit", lambda *a, **k: trained.append(a[3]) or real_fit(*a, **k))
    capsys.readouterr()
    out = tmp_path / "seed1"
    train(params, SPLIT, "diffrec", 1, str(data_dir), str(out), tuned_path=selected)
    assert trained == [] and "is diffrec-fixed's on" in capsys.readouterr().out
    retrained = tmp_path / "retrained"
    train(params, SPLIT, "diffrec", 1, str(data_dir), str(retrained), tuned_path=selected, reuse_tuned_run=False,
          timing_path=tmp_path / "t.json")
    assert trained == [1]
    for name in RUN_FILES:
        assert (out / name).read_bytes() == (retrained / name).read_bytes(), name
    assert (tmp_path / "logs" / "timing" / f"{SPLIT}_diffrec_seed1.json").exists()

    # the source missing: a clear error; another point selected: trained
    (tmp_path / folder / "metrics.json").unlink()
    with pytest.raises(FileNotFoundError, match="train diffrec-fixed seed 1 .* first \\(diffrec seed 1 is that run\\)"):
        train(params, SPLIT, "diffrec", 1, str(data_dir), str(tmp_path / "again"), tuned_path=selected)
    other = json.loads((tuning / SELECTED_FILE).read_text())
    other.update(point=0, hyper={"lr": 1e-7})
    (tuning / SELECTED_FILE).write_text(json.dumps(other))
    train(params, SPLIT, "diffrec", 1, str(data_dir), str(tmp_path / "lr7"), tuned_path=selected)
    assert trained == [1, 1]
