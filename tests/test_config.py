"""params.yaml validation: the real file passes; each broken copy names its key and the allowed values."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from pipeline.config import (
    MIRROR_ENV,
    REPO_ROOT,
    ConfigError,
    check_model_configs,
    evaluation_config,
    load_params,
    mirror_dir,
    model_config,
    training_config,
)
from pipeline import plan

PARAMS = REPO_ROOT / "params.yaml"


@pytest.fixture(scope="module")
def base() -> dict:
    with open(PARAMS) as fh:
        return yaml.safe_load(fh)


def write_params(tmp_path: Path, params: dict, name: str = "params.yaml") -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def error_for(tmp_path: Path, base: dict, modify) -> ConfigError:
    params = copy.deepcopy(base)
    modify(params)
    with pytest.raises(ConfigError) as info:  # the torch-free checks, then every planned model config
        check_model_configs(load_params(write_params(tmp_path, params)))
    return info.value


def test_real_params_file_passes():
    params = load_params(PARAMS)
    assert params["_path"] == str(PARAMS.resolve())
    assert params["experiments"][0]["models"][0] == "diffrec"
    t = training_config(params)
    assert (t.device, t.eval_every, t.patience, t.select_metric) == ("cpu", 5, 20, "recall@20")
    assert evaluation_config(params).topk == (10, 20, 50, 100)
    clean = model_config(params, "diffrec", "ml-1m_clean")
    noisy = model_config(params, "diffrec", "ml-1m_noisy")
    assert (clean.steps, clean.noise_scale, clean.dims) == (40, 0.005, [200, 600])
    assert (noisy.steps, noisy.noise_scale, noisy.noise_min) == (5, 0.5, 0.001)


def test_unmodified_copy_passes(tmp_path, base):
    load_params(write_params(tmp_path, copy.deepcopy(base)))


def test_env_var_names_the_params_file(tmp_path, base, monkeypatch):
    path = write_params(tmp_path, copy.deepcopy(base), "elsewhere.yaml")
    monkeypatch.setenv("PIPELINE_PARAMS", str(path))
    assert load_params()["_path"] == str(path.resolve())


def test_unknown_top_level_key(tmp_path, base):
    err = error_for(tmp_path, base, lambda p: p.update(trainig={"device": "cpu"}))
    assert err.key == "trainig"
    assert "unknown key" in str(err)
    for allowed in ("training", "evaluation", "experiments", "paths", "protocol"):
        assert f"'{allowed}'" in str(err)


def test_unknown_key_inside_training(tmp_path, base):
    err = error_for(tmp_path, base, lambda p: p["training"].update(epochs=10))
    assert err.key == "training.epochs"
    assert str(err).startswith("params: key 'training.epochs': unknown key")
    for allowed in ("device", "threads", "eval_every", "patience", "select_metric", "checkpoint_every"):
        assert f"'{allowed}'" in str(err)


def test_wrong_type(tmp_path, base):
    err = error_for(tmp_path, base, lambda p: p["training"].update(eval_every="five"))
    assert err.key == "training.eval_every"
    assert "'five'" in str(err) and "integer" in str(err)


def test_device_not_allowed(tmp_path, base):
    err = error_for(tmp_path, base, lambda p: p["training"].update(device="gpu"))
    assert err.key == "training.device"
    assert "'gpu'" in str(err)
    assert "['cpu', 'cuda', 'auto']" in str(err)


def test_unknown_model_in_experiments(tmp_path, base):
    err = error_for(tmp_path, base, lambda p: p["experiments"][0].update(models=["diffrec", "multvae"]))
    assert err.key == "experiments[0].models[1]"
    allowed = str(sorted(base["models"]))  # the model variants params.yaml defines
    assert "'multvae'" in str(err) and f"allowed values: {allowed}" in str(err)


def test_unknown_split_in_experiments(tmp_path, base):
    err = error_for(tmp_path, base, lambda p: p["experiments"][0].update(splits=["yelp_clean", "ml-1m_clean"]))
    assert err.key == "experiments[0].splits[0]"
    assert "'yelp_clean'" in str(err) and f"allowed values: {sorted(base['splits'])}" in str(err)


def test_split_source_not_in_sources(tmp_path, base):
    # grouplens-ml-1m exists, but only in more_sources (not downloaded by the DAG)
    err = error_for(tmp_path, base, lambda p: p["splits"]["ml-1m_noisy"].update(source="grouplens-ml-1m"))
    assert err.key == "splits.ml-1m_noisy.source"
    assert "'grouplens-ml-1m'" in str(err)
    assert f"allowed values: {sorted(base['sources'])}" in str(err)


def test_multi_file_source_is_one_form_or_the_other(tmp_path, base):
    # a source with `files` takes no url/mirror/checksum/archive of its own
    err = error_for(tmp_path, base, lambda p: p["sources"]["tvdiff-lastfm"].update(archive="none"))
    assert err.key == "sources.tvdiff-lastfm" and "no url, mirror, archive" in str(err)
    # each file needs a checksum
    err = error_for(tmp_path, base, lambda p: p["sources"]["tvdiff-lastfm"]["files"][1].pop("sha256"))
    assert err.key == "sources.tvdiff-lastfm.files[1]" and "sha256 or md5" in str(err)
    # two files of a source may not share a basename (they land in one folder)
    err = error_for(tmp_path, base, lambda p: p["sources"]["tvdiff-lastfm"]["files"][1].update(
        mirror="elsewhere/train.txt"))
    assert err.key == "sources.tvdiff-lastfm.files" and "'train.txt'" in str(err)


def test_given_split_settings_go_with_their_formats(tmp_path, base):
    def carved_diffrec(p):
        p["splits"]["ml-1m_carved"] = {**p["splits"]["ml-1m_clean"], "setting": "carved"}

    err = error_for(tmp_path, base, carved_diffrec)
    assert err.key == "splits.ml-1m_carved.setting"
    assert "['clean', 'noisy', 'temporal']" in str(err)

    def clean_tvdiff(p):
        p["splits"]["lastfm_clean"] = {**p["splits"]["lastfm_carved"], "setting": "clean"}

    err = error_for(tmp_path, base, clean_tvdiff)
    assert err.key == "splits.lastfm_clean.setting" and "['carved', 'authors']" in str(err)
    err = error_for(tmp_path, base, lambda p: p["protocol"].update(valid_fraction=1.0))
    assert err.key == "protocol.valid_fraction"


def test_noise_min_above_noise_max_in_per_split(tmp_path, base):
    err = error_for(tmp_path, base, lambda p: p["models"]["diffrec"]["per_split"]["ml-1m_clean"].update(noise_min=0.02))
    assert err.key == "models.diffrec.per_split.ml-1m_clean.noise_min"
    assert "models.diffrec.per_split.ml-1m_clean.noise_min" in str(err)
    assert "0.02" in str(err) and "0.01" in str(err)


def test_steps_zero(tmp_path, base):
    err = error_for(tmp_path, base, lambda p: p["models"]["diffrec"]["per_split"]["ml-1m_noisy"].update(steps=0))
    assert err.key == "models.diffrec.per_split.ml-1m_noisy.steps"
    assert ">= 1" in str(err) and "got 0" in str(err)


def test_steps_zero_in_defaults(tmp_path, base):
    def modify(p):
        p["models"]["diffrec"].setdefault("defaults", {})["steps"] = 0
        for block in p["models"]["diffrec"]["per_split"].values():
            block.pop("steps", None)  # per-split blocks may be one YAML anchor shared by two splits

    err = error_for(tmp_path, base, modify)
    assert err.key == "models.diffrec.defaults.steps"


def test_ratios_must_sum_to_one(tmp_path, base):
    err = error_for(tmp_path, base, lambda p: p["protocol"].update(ratios=[0.7, 0.2, 0.2]))
    assert err.key == "protocol.ratios"
    assert "sum to 1" in str(err)


def test_unknown_hyperparameter_in_defaults(tmp_path, base):
    err = error_for(tmp_path, base, lambda p: p["models"]["diffrec"].setdefault("defaults", {}).update(learning_rate=0.1))
    assert err.key == "models.diffrec.defaults.learning_rate"
    assert "unknown hyperparameter" in str(err)
    for allowed in ("lr", "dims", "steps", "noise_scale", "sampling_steps"):
        assert f"'{allowed}'" in str(err)


def test_select_metric_cutoff_not_in_topk(tmp_path, base):
    err = error_for(tmp_path, base, lambda p: p["training"].update(select_metric="recall@25"))
    assert err.key == "training.select_metric"
    assert "25" in str(err) and "[10, 20, 50, 100]" in str(err)


@pytest.mark.parametrize("key, value", [("lr", "1e-3"), ("epochs", True)], ids=["lr-string", "epochs-bool"])
def test_hyperparameter_of_wrong_type(tmp_path, base, key, value):
    assert yaml.safe_load("lr: 1e-3")["lr"] == "1e-3"  # the realistic way to get a string here

    def modify(p):
        p["models"]["diffrec"].setdefault("defaults", {})[key] = value
        for block in p["models"]["diffrec"]["per_split"].values():
            block.pop(key, None)

    err = error_for(tmp_path, base, modify)
    assert err.key == f"models.diffrec.defaults.{key}"


def test_defaults_live_in_the_model_configs(base):
    """params.yaml holds what differs from the code: a variant's own values (tdiffrec's w_min),
    a split's, a grid point's; everything else is the Config's default."""
    from pipeline.models.diffusion import DiffusionConfig
    from pipeline.models.ldiffrec import LDiffRecConfig
    from pipeline.models.tdiffrec import TDiffRecConfig

    assert "defaults" not in base["models"]["diffrec"]
    cfg = model_config(base, "tdiffrec", "ml-1m_temporal")
    assert cfg == TDiffRecConfig(w_min=0.3)  # models.tdiffrec.defaults; the per_split values equal the code's
    assert model_config(base, "diffrec", "ml-1m_noisy").steps == 5  # per_split
    assert model_config(base, "diffrec", "ml-1m_noisy", {"steps": 7}).steps == 7  # a grid point
    assert model_config(base, "ltdiffrec", "ml-1m_temporal").temporal is True  # LT-DiffRec's class default
    assert DiffusionConfig().noise_max == 0.01 and LDiffRecConfig().noise_max == 0.02  # a model overrides a shared default
    assert LDiffRecConfig().dims is not LDiffRecConfig().dims  # a fresh list each


def test_an_error_about_a_code_default_names_its_file(base):
    from pipeline.config import code_default_note

    assert code_default_note(base, "diffrec", "ml-1m_clean", "steps") == ""  # set by per_split
    assert code_default_note(base, "diffrec", "ml-1m_clean", "max_beta", override=True) == (
        "; the value is the code default in pipeline/models/diffusion.py (set models.diffrec.defaults.max_beta to "
        "override it)")
    assert code_default_note(base, "ldiffrec", "ml-1m_clean", "lamda_floor").endswith("pipeline/models/ldiffrec.py")
    assert code_default_note(base, "tdiffrec", "ml-1m_temporal", "w_min") == ""  # models.tdiffrec.defaults
    assert code_default_note(base, "diffrec", "ml-1m_clean", "max_beta", {"max_beta": 0.5}) == ""  # a grid point


def test_noise_max_override_below_default_noise_min(tmp_path, base):
    def modify(p):
        block = p["models"]["diffrec"]["per_split"]["ml-1m_clean"]
        del block["noise_min"]  # noise_min = 0.005, the code default
        block["noise_max"] = 0.001

    err = error_for(tmp_path, base, modify)
    assert err.key == "models.diffrec.per_split.ml-1m_clean.noise_max"


# --------------------------------------------------------------------------------------------
# mirror_dir


def test_eval_every_must_leave_room_for_an_evaluation(tmp_path, base):
    # patience counts epochs since the last best (epoch 0 before any evaluation) and is checked
    # before each epoch: with eval_every >= patience every run stops before its first evaluation
    err = error_for(tmp_path, base, lambda p: p["training"].update(eval_every=20, patience=20))
    assert str(err) == (
        "params: key 'training.eval_every': 20 is not below training.patience (20): patience counts epochs since "
        "the last new best (0 before the first evaluation), so every run would stop before epoch 20, before its "
        "first evaluation at epoch 20; make training.eval_every < training.patience"
    )
    one_epoch_of_room = copy.deepcopy(base)
    one_epoch_of_room["training"].update(eval_every=9, patience=10)
    load_params(write_params(tmp_path, one_epoch_of_room))


def test_a_split_schedule_is_checked_and_read_for_that_split_only(tmp_path, base):
    """training.per_split.<split> overrides the schedule of that split's runs (the authors' protocol
    evaluates every epoch): checked like the block, for a defined split only."""
    err = error_for(tmp_path, base, lambda p: p["training"].update(per_split={"ml-1m_clean": {"eval_every": 10, "patience": 10}}))
    assert err.key == "training.per_split.ml-1m_clean.eval_every"
    err = error_for(tmp_path, base, lambda p: p["training"].update(per_split={"nowhere": {"patience": 10}}))
    assert err.key == "training.per_split" and "nowhere" in str(err)
    ok = copy.deepcopy(base)
    ok["training"]["per_split"] = {"ml-1m_clean": {"eval_every": 1, "patience": 10}}
    params = load_params(write_params(tmp_path, ok))
    assert (training_config(params, "ml-1m_clean").eval_every, training_config(params, "ml-1m_clean").patience) == (1, 10)
    assert training_config(params, "ml-1m_noisy") == training_config(params)
    assert training_config(params).eval_every == base["training"]["eval_every"]
    assert "training.per_split.ml-1m_clean" in plan.model_params(params, "ml-1m_clean", "diffrec")
    assert not any("per_split" in k for k in plan.model_params(params, "ml-1m_noisy", "diffrec") if k.startswith("training"))
    # evaluation never reached: HDRM's 20 epochs end before epoch 30
    err = error_for(tmp_path, base, lambda p: p["training"].update(eval_every=30, patience=100))
    assert str(err) == (
        "params: key 'training.eval_every': 30 is more than models.hdrm.defaults.epochs (20; the value is the code "
        "default in pipeline/models/hdrm.py): the run of 'hdrm' on "
        "'ml-1m_clean' would end before its first evaluation at epoch 30; make training.eval_every <= "
        "models.hdrm.defaults.epochs"
    )
    load_params(REPO_ROOT / "tests" / "e2e" / "params.yaml")  # the CI configuration passes too


def test_mirror_relative_to_params_folder(tmp_path, base, monkeypatch):
    monkeypatch.delenv(MIRROR_ENV, raising=False)
    monkeypatch.chdir(REPO_ROOT)  # the cwd must not matter
    params = load_params(write_params(tmp_path / "conf", copy.deepcopy(base)))
    assert mirror_dir(params) == (tmp_path / "conf").resolve() / "../shared/datasets"
    assert mirror_dir(load_params(PARAMS)) == REPO_ROOT / "../shared/datasets"


def test_mirror_absolute_and_null(tmp_path, base, monkeypatch):
    monkeypatch.delenv(MIRROR_ENV, raising=False)
    p = copy.deepcopy(base)
    p["paths"]["mirror"] = str(tmp_path / "abs")
    assert mirror_dir(load_params(write_params(tmp_path, p))) == tmp_path / "abs"
    p["paths"]["mirror"] = None
    assert mirror_dir(load_params(write_params(tmp_path, p))) is None


def test_mirror_env_overrides(tmp_path, base, monkeypatch):
    params = load_params(write_params(tmp_path, copy.deepcopy(base)))
    monkeypatch.setenv(MIRROR_ENV, str(tmp_path / "from-env"))
    assert mirror_dir(params) == tmp_path / "from-env"
    monkeypatch.setenv(MIRROR_ENV, "")
    assert mirror_dir(params) is None
    monkeypatch.setenv(MIRROR_ENV, "rel/mirror")
    assert mirror_dir(params) == tmp_path.resolve() / "rel" / "mirror"


def test_grid_value_that_breaks_a_constraint_names_the_grid_key(tmp_path, base):
    err = error_for(tmp_path, base, lambda p: p["models"]["multidae"]["grid"].update(dropout=[0.2, 1.5]))
    assert err.key == "models.multidae.grid.dropout"


def test_grid_must_be_a_mapping_of_lists(tmp_path, base):
    err = error_for(tmp_path, base, lambda p: p["models"]["mf"].update(grid={"lr": 0.01}))
    assert "models.mf.grid.lr" in err.key and "array" in str(err)


def test_variant_threads_must_be_positive(tmp_path, base):
    err = error_for(tmp_path, base, lambda p: p["models"]["mf"].update(threads=0))
    assert err.key == "models.mf.threads"


def test_unknown_synthetic_preset_in_build(tmp_path, base):
    err = error_for(tmp_path, base, lambda p: p["synthetic"]["build"].append("netflix"))
    assert err.key == "synthetic.build[1]" and "ml-1m" in str(err)


def test_hdrm_runs_get_the_stage1_splits(base):
    """The embed stage exports HGCF where a model that requires its points runs, nowhere else."""
    from pipeline.plan import embed_jobs

    params = copy.deepcopy(base)
    assert [s for s, m in embed_jobs(params) if m == "hgcf"] == ["ml-1m_clean", "ml-1m_noisy"]
    params["experiments"] = [{"splits": ["ml-1m_noisy"], "models": ["diffrec", "hdrm"], "seeds": [1]},
                             {"splits": ["ml-1m_clean"], "models": ["diffrec"], "seeds": [1]}]
    assert embed_jobs(params) == [("ml-1m_noisy", "hgcf")]  # and no LightGCN: no latent model runs


def test_a_hdrm_variant_reads_the_hgcf_variant_it_names(tmp_path, base):
    """``models.<v>.embeddings`` of a HDRM variant names its stage 1: an HGCF variant, exported by
    the embed stage on the splits where the HDRM variant runs; anything else is an error."""
    from pipeline.plan import embed_jobs, embed_models, stage1_of, train_command, Run

    params = copy.deepcopy(base)
    assert {"lightgcn", "hgcf", "hgcf-512"} <= set(embed_models(params))
    params["experiments"] = [{"splits": ["ml-1m_clean"], "models": ["hdrm-512"], "seeds": [1]}]
    assert embed_jobs(params) == [("ml-1m_clean", "hgcf-512")]
    assert stage1_of(params, "ml-1m_clean", "hdrm-512") == "data/embeddings/ml-1m_clean/hgcf-512"
    assert "--hyperbolic data/embeddings/ml-1m_clean/hgcf-512" in train_command(params, Run("ml-1m_clean", "hdrm-512", 1))
    err = error_for(tmp_path, base, lambda p: p["models"]["hdrm-512"].update(embeddings="lightgcn"))
    assert err.key == "models.hdrm-512.embeddings" and "hgcf-512" in str(err)


def test_the_embed_stage_exports_a_run_the_dag_trains_once(base):
    """An embedding model is trained by the train stage (seed ``embeddings.seed``) whether or not
    a block lists it, once where a block does list it; the embed job reads that run's model."""
    from pipeline.plan import Run, embed_command, embed_inputs, trained_runs

    params = copy.deepcopy(base)
    params["embeddings"]["seed"] = 2
    params["experiments"] = [{"splits": ["ml-1m_clean"], "models": ["hdrm-512", "ldiffrec"], "seeds": [1]}]
    runs = trained_runs(params)
    assert runs == [Run("ml-1m_clean", "hdrm-512", 1), Run("ml-1m_clean", "ldiffrec", 1),
                    Run("ml-1m_clean", "lightgcn", 2), Run("ml-1m_clean", "hgcf-512", 2)]
    assert "runs/ml-1m_clean/hgcf-512/seed2/model.pt" in embed_inputs(params, "ml-1m_clean", "hgcf-512")
    assert "--run runs/ml-1m_clean/hgcf-512/seed2 " in embed_command(params, "ml-1m_clean", "hgcf-512")
    params["experiments"].append({"splits": ["ml-1m_clean"], "models": ["lightgcn"], "seeds": [1, 2, 3]})
    assert trained_runs(params).count(Run("ml-1m_clean", "lightgcn", 2)) == 1
    # a tuned embedding model's export reads the tune job's output folder (what Snakemake can
    # trace to the tune rule), its command the selected setting in it
    params["models"]["hgcf-512"]["grid"] = {"margin": [0.1, 0.2]}
    assert "runs/ml-1m_clean/hgcf-512/tuning" in embed_inputs(params, "ml-1m_clean", "hgcf-512")
    assert "--tuned runs/ml-1m_clean/hgcf-512/tuning/selected.json " in embed_command(params, "ml-1m_clean", "hgcf-512")


def test_order_free_temporal_runs_reuse_the_clean_twin(base):
    """The temporal split repeats clean's rows: DiffRec's temporal run is its clean run, trained
    once; T-DiffRec (uses_time_order) trains on the temporal split; LT-DiffRec reads clean's clusters."""
    from pipeline.plan import Run, clusters_of, table_runs, trained_run, trained_runs

    params = copy.deepcopy(base)
    params["experiments"] = [{"splits": ["ml-1m_clean", "ml-1m_temporal"], "models": ["diffrec", "tdiffrec", "ltdiffrec"],
                              "seeds": [1]}]
    assert trained_run(params, Run("ml-1m_temporal", "diffrec", 1)) == Run("ml-1m_clean", "diffrec", 1)
    assert trained_run(params, Run("ml-1m_temporal", "tdiffrec", 1)) == Run("ml-1m_temporal", "tdiffrec", 1)
    # 5 trained for the 6 table runs, and LightGCN's run whose item vectors LT-DiffRec's clusters use
    assert len(table_runs(params)) == 6 and len(trained_runs(params)) == 6
    assert trained_runs(params)[-1] == Run("ml-1m_clean", "lightgcn", 1)
    assert clusters_of(params, "ml-1m_temporal", "ltdiffrec") == ("data/clusters/ml-1m_clean", "lightgcn")


def test_planning_and_validation_import_no_torch():
    import subprocess
    import sys

    code = ("import sys; from pipeline.config import load_params; from pipeline import plan; "
            "from pipeline.stages import dvc_yaml; p = load_params(); plan.trained_runs(p); dvc_yaml.render(p); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1], capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == "False"


def test_stage1_model_block_is_required(tmp_path, base):
    def drop(p):  # the block, and the table rows of HGCF-64 that would name it first
        p["models"].pop("hgcf")
        for block in p["experiments"]:
            block["models"] = [m for m in block["models"] if m != "hgcf"]
        p["experiments"] = [block for block in p["experiments"] if block["models"]]
    err = error_for(tmp_path, base, drop)
    assert err.key == "models" and "models.hgcf" in str(err)


def test_stage1_hyperparameters_are_checked(tmp_path, base):
    err = error_for(tmp_path, base, lambda p: p["models"]["hgcf"].setdefault("defaults", {}).update(momentum=1.5))
    assert err.key == "models.hgcf.defaults.momentum"


def test_blocks_plan_their_products_in_order(base):
    from pipeline.config import check_semantics
    from pipeline.plan import table_runs as planned_runs

    params = copy.deepcopy(base)
    params["experiments"] = [{"splits": ["ml-1m_clean", "ml-1m_noisy"], "models": ["diffrec"], "seeds": [1, 2]},
                             {"splits": ["ml-1m_clean"], "models": ["tvdiff"], "seeds": [2]}]
    check_semantics(params)
    assert planned_runs(params) == [("ml-1m_clean", "diffrec", 1), ("ml-1m_clean", "diffrec", 2),
                                    ("ml-1m_noisy", "diffrec", 1), ("ml-1m_noisy", "diffrec", 2),
                                    ("ml-1m_clean", "tvdiff", 2)]


def test_a_deterministic_model_runs_its_blocks_first_seed_only(base):
    from pipeline.config import check_semantics
    from pipeline.plan import table_runs as planned_runs

    params = copy.deepcopy(base)
    params["experiments"] = [{"splits": ["ml-1m_clean"], "models": ["mostpop", "diffrec", "ease"], "seeds": [2, 3]}]
    check_semantics(params)
    assert planned_runs(params) == [("ml-1m_clean", "mostpop", 2), ("ml-1m_clean", "diffrec", 2),
                                    ("ml-1m_clean", "diffrec", 3), ("ml-1m_clean", "ease", 2)]


def test_a_run_planned_twice_is_refused(tmp_path, base):
    err = error_for(tmp_path, base, lambda p: p["experiments"].append(
        {"splits": ["ml-1m_noisy"], "models": ["tvdiff"], "seeds": [3]}))
    assert err.key == f"experiments[{len(base['experiments'])}]" and "also planned by experiments[0]" in str(err)


def test_a_block_needs_seeds(tmp_path, base):
    err = error_for(tmp_path, base, lambda p: p["experiments"][0].update(seeds=[]))
    assert err.key == "experiments[0].seeds"


def test_shared_hyperparameter_checks():
    """pipeline.models.checks: one message per bad key, nothing for good values."""
    from dataclasses import dataclass

    from pipeline.models import checks as c

    @dataclass
    class Cfg:
        lr: float = 0.001
        decay: float = 0.0
        epochs: int = 10
        dims: tuple = (200, 600)
        dropout: float = 0.5
        mix: float = 1.0
        act: str = "relu"
        noise_min: float = 0.001
        noise_max: float = 0.01

    good = Cfg()
    assert c.positive(good, "lr") + c.non_negative(good, "decay") + c.counts(good, "epochs") + c.dims(good) == []
    assert c.fractions(good, "dropout") + c.unit_interval(good, "mix") + c.one_of(good, "act", ["relu"]) + c.noise_bounds(good) == []
    bad = Cfg(lr=0.0, decay=-1.0, epochs=True, dims=(200, 0), dropout=1.0, mix=1.5, act="gelu", noise_min=0.02)
    assert c.positive(bad, "lr") == [("lr", "must be > 0, got 0.0")]
    assert c.non_negative(bad, "decay") == [("decay", "must be >= 0, got -1.0")]
    assert c.counts(bad, "epochs") == [("epochs", "must be an integer >= 1, got True")]
    assert c.dims(bad) == [("dims", "must be a non-empty list of positive integers, got (200, 0)")]
    assert c.fractions(bad, "dropout") == [("dropout", "must be in [0, 1), got 1.0")]
    assert c.unit_interval(bad, "mix") == [("mix", "must be in [0, 1], got 1.5")]
    assert c.one_of(bad, "act", ["relu", "tanh"]) == [("act", "'gelu' is not allowed; allowed values: ['relu', 'tanh']")]
    assert c.noise_bounds(bad) == [(("noise_min", "noise_max"), "need 0 < noise_min <= noise_max < 1, got 0.02 and 0.01")]


# --------------------------------------------------------------------------------------------
# overlays (extends)


def test_merge_patch_merges_mappings_replaces_the_rest_and_null_deletes():
    from pipeline.config import merge_patch

    base = {"a": {"x": 1, "y": [1, 2], "z": {"k": 1}}, "b": 2, "c": 3}
    patch = {"a": {"y": [3], "z": {"j": 2}, "w": {"n": None}}, "b": None, "d": {"e": 4}}
    assert merge_patch(base, patch) == {"a": {"x": 1, "y": [3], "z": {"k": 1, "j": 2}, "w": {}}, "c": 3, "d": {"e": 4}}
    assert base == {"a": {"x": 1, "y": [1, 2], "z": {"k": 1}}, "b": 2, "c": 3}  # not modified


def test_an_overlay_is_resolved_onto_the_file_it_extends(tmp_path, base):
    from pipeline.config import read_params

    (tmp_path / "conf").mkdir()
    write_params(tmp_path, copy.deepcopy(base))
    overlay = tmp_path / "conf" / "small.yaml"
    overlay.write_text("extends: ../params.yaml\ntraining: {threads: 1}\nmodels: {diffrec: {defaults: {epochs: 6}}, hgcf: {threads: null}}\n")
    params = load_params(overlay)
    assert params["training"] == {**base["training"], "threads": 1}
    assert params["models"]["diffrec"] == {**base["models"]["diffrec"], "defaults": {"epochs": 6}}
    assert "threads" not in params["models"]["hgcf"] and "extends" not in params
    assert params["_path"] == str(overlay.resolve())
    assert read_params(overlay) == {k: v for k, v in params.items() if k != "_path"}
    assert model_config(params, "diffrec", "ml-1m_noisy").epochs == 6


def test_overlay_errors_name_the_extends_key(tmp_path, base):
    write_params(tmp_path, copy.deepcopy(base))
    missing = tmp_path / "missing.yaml"
    missing.write_text("extends: nowhere.yaml\n")
    with pytest.raises(ConfigError, match="nowhere.yaml does not exist") as err:
        load_params(missing)
    assert err.value.key == "extends"
    (tmp_path / "a.yaml").write_text("extends: b.yaml\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    with pytest.raises(ConfigError, match="extends a file that extends it") as err:
        load_params(tmp_path / "a.yaml")
    # a bad value in the overlay is reported like one in a whole file
    (tmp_path / "bad.yaml").write_text("extends: params.yaml\ntraining: {threads: 0}\n")
    with pytest.raises(ConfigError) as err:
        load_params(tmp_path / "bad.yaml")
    assert err.value.key == "training.threads"


def test_e2e_params_resolve_and_the_resolved_file_loads_alike(tmp_path):
    from pipeline.__main__ import main

    e2e = REPO_ROOT / "tests" / "e2e" / "params.yaml"
    assert main(["--params", str(e2e), "resolve-params", "--out", str(tmp_path / "params.yaml")]) == 0
    written = load_params(tmp_path / "params.yaml")
    resolved = load_params(e2e)
    assert {k: v for k, v in written.items() if k != "_path"} == {k: v for k, v in resolved.items() if k != "_path"}
    assert sorted(resolved["splits"]) == ["ml-100k_clean", "ml-100k_noisy", "ml-100k_temporal"]
    assert "synthetic" not in resolved and resolved["more_sources"] == {}


def test_a_variant_names_its_row_and_its_published_numbers(base):
    """``display`` names the row, ``paper`` the published numbers it stands beside: the class's
    name by default, none for a configuration the paper did not run (``paper: null``)."""
    from pipeline.config import display_names

    params = copy.deepcopy(base)
    params["models"]["mf"] = {"display": "MF (lr 0.01)"}
    params["models"]["multivae"] = {"paper": None}
    assert display_names(params, "mf") == ("MF (lr 0.01)", "MF")
    assert display_names(params, "multivae") == ("MultiVAE", None)
    assert display_names(params, "diffrec") == ("DiffRec", "DiffRec")


def test_paper_is_a_name_or_null(tmp_path, base):
    err = error_for(tmp_path, base, lambda p: p["models"]["mf"].update(paper=3))
    assert err.key == "models.mf.paper"


def test_priorities_put_the_longest_chain_of_measured_work_first(base):
    """pipeline.plan.job_priorities on the real plan: every job 10 s but HDRM-64's runs (400 s):
    HGCF's seed-1 run, whose embed job they wait on, comes first (10 + 10 + 400), then that embed
    job, then the runs; a tune job ranks its own seconds plus its variant's train runs'; a job
    missing from the measurements counts as its rule's longest measured one."""
    jobs = plan.job_priorities(base, {})
    assert set(jobs.values()) == {0.0} and "train/ml-1m_clean/hgcf/1" in jobs and "embed/ml-1m_noisy/hgcf" in jobs
    seconds = {job: (400.0 if job.startswith("train/ml-1m_clean/hdrm/") else 10.0) for job in jobs}
    seconds.pop("train/ml-1m_clean/mf/3")
    ranks = plan.job_priorities(base, seconds)
    assert ranks["train/ml-1m_clean/hdrm/2"] == 400.0
    assert ranks["embed/ml-1m_clean/hgcf"] == 410.0
    assert ranks["train/ml-1m_clean/hgcf/1"] == 420.0 == max(ranks.values())
    assert ranks["train/ml-1m_noisy/hgcf/1"] == 30.0  # HDRM-64's noisy runs measured 10 s here
    assert ranks["train/ml-1m_clean/mf/3"] == 400.0  # unmeasured: the longest measured train job
    assert ranks["tune/ml-1m_clean/multidae"] == 20.0
    assert ranks["train/ml-1m_clean/lightgcn/1"] == 40.0  # its run, the embed and cluster jobs, L-DiffRec's runs
