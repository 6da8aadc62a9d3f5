"""dvc.yaml is rendered from params.yaml by the run planner (pipeline/dvcfile.py)."""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

from pipeline.config import load_params, planned_runs
from pipeline.dvcfile import render, stages

ROOT = Path(__file__).resolve().parents[1]


def test_committed_dvc_yaml_is_the_render_of_params():
    rendered = render(load_params(ROOT / "params.yaml"))
    assert (ROOT / "dvc.yaml").read_text() == rendered, "dvc.yaml is out of date: run `python -m pipeline dvc-yaml`"


def test_every_planned_run_has_one_stage_of_its_kind():
    params = load_params(ROOT / "params.yaml")
    out = stages(params)
    names = {f"{group}@{key}" for group, stage in out.items() if group.startswith("train") for key in stage["foreach"]}
    assert len(names) == len(planned_runs(params))
    assert "train_tuned@ml-1m_clean-mf-1" in names and "train_latent@ml-1m_temporal-ltdiffrec-3" in names
    assert "train_hyperbolic@ml-1m_noisy-hdrm-2" in names and "train@ml-1m_clean-tvdiff-argsp-3" in names
    assert list(out["embed_hyperbolic"]["foreach"]) == ["ml-1m_clean", "ml-1m_noisy"]
    assert out["tune"]["foreach"]["ml-1m_noisy-codigem"] == {"split": "ml-1m_noisy", "model": "codigem", "seed": 1}


def test_a_new_kind_of_run_gets_its_own_group():
    """A latent variant with a grid (a combination no hand-kept group had): tuned on clusters."""
    params = copy.deepcopy(load_params(ROOT / "params.yaml"))
    params["models"]["ldiffrec"]["grid"] = {"lr_ae": [0.001, 0.0005]}
    params["experiments"] = [{"splits": ["ml-1m_clean"], "models": ["ldiffrec"], "seeds": [2, 3]}]
    out = stages(params)
    assert list(out["tune_latent"]["foreach"]) == ["ml-1m_clean-ldiffrec"]
    assert out["tune_latent"]["foreach"]["ml-1m_clean-ldiffrec"]["seed"] == 2  # the first seed it runs with
    assert "--clusters data/clusters/${item.split}" in out["tune_latent"]["do"]["cmd"]
    train = out["train_tuned_latent"]["do"]
    assert "--clusters" in train["cmd"] and "--tuned" in train["cmd"]
    assert "data/clusters/${item.split}" in train["deps"] and "runs/${item.split}/${item.model}/tuning" in train["deps"]
    assert "embed_hyperbolic" not in out  # no model needs HDRM's stage 1
    assert yaml.safe_load(render(params))["stages"].keys() == out.keys()
