"""dvc.yaml is rendered from params.yaml by the run planner (pipeline/stages/dvc_yaml.py)."""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

from pipeline.config import load_params
from pipeline.plan import trained_runs
from pipeline.stages.dvc_yaml import render, stages

ROOT = Path(__file__).resolve().parents[1]


def test_committed_dvc_yaml_is_the_render_of_params():
    rendered = render(load_params(ROOT / "params.yaml"))
    assert (ROOT / "dvc.yaml").read_text() == rendered, "dvc.yaml is out of date: run `python -m pipeline dvc-yaml`"


def test_every_trained_run_has_its_stage():
    params = load_params(ROOT / "params.yaml")
    out = stages(params)
    names = {name for name in out if name.startswith("train-")}
    assert names == {f"train-{split}-{model}-{seed}" for split, model, seed in trained_runs(params)}
    assert "train-ml-1m_clean-mf-1" in names and "train-ml-1m_temporal-ltdiffrec-3" in names
    assert "train-ml-1m_temporal-diffrec-1" not in names  # the clean run stands for it
    assert [n for n in out if n.startswith("embed-")] == [
        "embed-ml-1m_clean-lightgcn", "embed-ml-1m_noisy-lightgcn", "embed-ml-1m_clean-hgcf", "embed-ml-1m_noisy-hgcf",
        "embed-ml-1m_clean-hgcf-512", "embed-ml-1m_noisy-hgcf-512"]
    assert "--seed 1 " in out["tune-ml-1m_noisy-codigem"]["cmd"]


def test_a_stage_depends_on_exactly_the_params_it_reads():
    """A table label (display) or another split's override is not a dependency of a run."""
    params = load_params(ROOT / "params.yaml")
    out = stages(params)
    keys = out["train-ml-1m_clean-tvdiff-1"]["params"]
    assert not any(k.endswith(".display") or "per_split.ml-1m_noisy" in k for k in keys)
    assert "models.tvdiff.threads" in keys and "training.threads" not in keys
    assert "models.diffrec.per_split.ml-1m_clean" in out["train-ml-1m_clean-diffrec-1"]["params"]


def test_a_latent_variant_with_a_grid_is_tuned_on_its_clusters():
    """A combination no hand-kept group had: tuned, on clusters."""
    params = copy.deepcopy(load_params(ROOT / "params.yaml"))
    params["models"]["ldiffrec"]["grid"] = {"lr_ae": [0.001, 0.0005]}
    params["experiments"] = [{"splits": ["ml-1m_clean"], "models": ["ldiffrec"], "seeds": [2, 3]}]
    out = stages(params)
    assert "--seed 2 " in out["tune-ml-1m_clean-ldiffrec"]["cmd"]  # the first seed it runs with
    assert "--clusters data/clusters/ml-1m_clean" in out["tune-ml-1m_clean-ldiffrec"]["cmd"]
    train = out["train-ml-1m_clean-ldiffrec-3"]
    assert "--clusters" in train["cmd"] and "--tuned" in train["cmd"]
    assert "data/clusters/ml-1m_clean/lightgcn/clusters.parquet" in train["deps"]
    assert "runs/ml-1m_clean/ldiffrec/tuning" in train["deps"]
    assert not any(name.endswith("-hgcf") for name in out)  # no model needs HDRM's stage 1
    assert "import_embeddings" not in out  # no variant reads the released embeddings
    assert yaml.safe_load(render(params))["stages"].keys() == out.keys()


def test_a_run_depends_on_its_own_model_file_not_the_others():
    """Code deps come from the import graph: editing HDRM reruns HDRM's runs only."""
    out = stages(load_params(ROOT / "params.yaml"))
    diffrec = out["train-ml-1m_clean-diffrec-1"]["deps"]
    mostpop = out["train-ml-1m_clean-mostpop-1"]["deps"]
    assert {"pipeline/models/diffrec.py", "pipeline/models/fast/diffrec.py", "pipeline/stages/train.py",
            "pipeline/training/trainer.py", "pipeline/evaluation/metrics.py"} <= set(diffrec)
    assert "pipeline/models/hdrm.py" not in diffrec and "pipeline/models/diffrec.py" not in mostpop
    assert "pipeline/config.py" not in diffrec  # plumbing: its effect goes through the tracked params
    assert out["train-ml-1m_clean-ldiffrec-1"]["deps"].count("pipeline/models/diffrec.py") == 1  # L-DiffRec imports it


def test_the_reporting_stages_depend_on_the_files_they_read_not_the_run_folders():
    """The significance stage reads the planned runs' per-user tables, the aggregate stage their
    metrics and histories (both in git) and the committed significance CSV; model weights, resume
    checkpoints or an unplanned run under runs/ are no dependency of either."""
    params = load_params(ROOT / "params.yaml")
    out = stages(params)
    folders = [f"runs/{split}/{model}/seed{seed}" for split, model, seed in trained_runs(params)]
    significance = [d for d in out["significance"]["deps"] if d.startswith("runs/")]
    aggregate = [d for d in out["aggregate"]["deps"] if d.startswith("runs/")]
    assert significance == [f"{f}/per_user.parquet" for f in folders]
    assert aggregate == [f"{f}/metrics.json" for f in folders] + [f"{f}/history.csv" for f in folders] + [
        "runs/significance.csv"]
