"""Synthetic data: exact sizes, long tails, determinism, the stage, and prepare on its output."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp
import yaml

from pipeline.config import ConfigError, ProtocolConfig, SplitConfig, check_semantics, synthetic_config
from pipeline.stages.prepare import prepare, split_sizes
from pipeline.data.synthetic import SyntheticSpec, describe, generate, synthetic_matrix
from pipeline.stages.synthesize import main

ROOT = Path(__file__).resolve().parents[1]
PROTOCOL = ProtocolConfig(rating_threshold=4, k_core=10, ratios=(0.7, 0.2, 0.1), rounding="diffrec", noisy_max_fraction=1.0)
SMALL = SyntheticSpec(n_users=300, n_items=200, n_interactions=9_000, item_exponent=0.9, user_exponent=0.7,
                      min_interactions=10, start=1_000_000_000, span_days=100, seed=7)
# DiffRec's clean datasets (reference README): the presets must have exactly these sizes
SIZES = {"ml-1m": (5_949, 2_810, 571_531), "yelp": (54_574, 34_395, 1_402_736), "amazon-book": (108_822, 94_949, 3_146_256)}


@pytest.fixture(scope="module")
def params():
    with open(ROOT / "params.yaml") as fh:
        return yaml.safe_load(fh)


def _top_share(counts: np.ndarray, fraction: float = 0.01) -> float:
    top = max(1, int(len(counts) * fraction))
    return float(np.sort(counts)[::-1][:top].sum() / counts.sum())


def test_small_spec_statistics():
    table = generate(SMALL)
    assert table.schema == pl.Schema({"user": pl.Int32, "item": pl.Int32, "timestamp": pl.Int64})
    assert table.height == SMALL.n_interactions
    assert table["user"].n_unique() == SMALL.n_users and table["user"].max() == SMALL.n_users - 1
    assert table["item"].n_unique() == SMALL.n_items and table["item"].max() == SMALL.n_items - 1
    assert not table.select("user", "item").is_duplicated().any()
    assert table.equals(table.sort("user", "item"))
    users, items = table.group_by("user").len()["len"], table.group_by("item").len()["len"]
    assert users.min() >= 10 and items.min() >= 10
    assert users.max() <= SMALL.n_items // 2 and items.max() <= SMALL.n_users // 2
    assert table["timestamp"].min() >= SMALL.start
    assert table["timestamp"].max() < SMALL.start + SMALL.span_days * 86_400
    assert _top_share(items.to_numpy(), 0.05) > 2 * 0.05  # long tail: the top 5% hold more than twice their share


def test_determinism():
    assert generate(SMALL).equals(generate(SMALL))
    assert generate({**SMALL.__dict__}).equals(generate(SMALL))  # a mapping gives the same
    other = generate(SyntheticSpec(**{**SMALL.__dict__, "seed": 8}))
    assert other.height == SMALL.n_interactions and not other.equals(generate(SMALL))


@pytest.mark.parametrize("name", list(SIZES))
def test_presets_exact_sizes_and_long_tail(params, name):
    matrix, timestamps = synthetic_matrix(name, params)
    n_users, n_items, n = SIZES[name]
    assert isinstance(matrix, sp.csr_matrix) and matrix.dtype == np.float32
    assert matrix.shape == (n_users, n_items) and matrix.nnz == n and len(timestamps) == n
    assert matrix.has_canonical_format  # sorted, no repeated (user, item)
    assert np.all(matrix.data == 1.0) and timestamps.dtype == np.int64
    user_deg, item_deg = np.diff(matrix.indptr), np.bincount(matrix.indices, minlength=n_items)
    assert user_deg.min() >= 10 and item_deg.min() >= 10  # a 10-core already: prepare keeps everything
    # long tail: the top 1% of items hold at least 8x their uniform share, the top 1% of users 3x
    assert _top_share(item_deg) >= 0.08
    assert _top_share(user_deg) >= 0.03
    spec = synthetic_config(params, name)
    assert (spec.start <= timestamps).all() and (timestamps < spec.start + spec.span_days * 86_400).all()


def test_matrix_equals_table():
    table = generate(SMALL)
    matrix, timestamps = synthetic_matrix(SMALL)
    coo = matrix.tocoo()
    assert np.array_equal(coo.row, table["user"].to_numpy()) and np.array_equal(coo.col, table["item"].to_numpy())
    assert np.array_equal(timestamps, table["timestamp"].to_numpy())


def test_infeasible_specs_are_refused():
    with pytest.raises(ValueError, match="n_interactions"):
        generate(SyntheticSpec(n_users=100, n_items=50, n_interactions=500))  # < 10 per user
    with pytest.raises(ValueError, match="n_interactions"):
        generate(SyntheticSpec(n_users=100, n_items=50, n_interactions=3_000))  # > half the matrix
    with pytest.raises(ValueError, match="unknown synthetic parameter"):
        generate({"n_users": 10, "n_items": 10, "n_interactions": 50, "alpha": 1})


def test_preset_errors_name_the_key(params):
    p = copy.deepcopy(params)
    p["synthetic"]["presets"]["ml-1m"]["n_interactions"] = 10
    with pytest.raises(ConfigError) as err:
        check_semantics(p)
    assert err.value.key == "synthetic.presets.ml-1m.n_interactions"
    with pytest.raises(ConfigError, match="allowed values: \\['amazon-book', 'ml-1m', 'yelp'\\]"):
        synthetic_config(params, "netflix")


def test_presets_match_the_reference_sizes(params):
    for name, (n_users, n_items, n) in SIZES.items():
        spec = synthetic_config(params, name)
        assert (spec.n_users, spec.n_items, spec.n_interactions) == (n_users, n_items, n)


# --------------------------------------------------------------------------------------------
# the stage and prepare on its output


def _params_with(tmp_path: Path, base: dict, spec: SyntheticSpec) -> dict:
    p = copy.deepcopy(base)
    p["synthetic"] = {"presets": {"small": {k: v for k, v in spec.__dict__.items()}}}
    p["splits"]["small_clean"] = {"dataset": "small", "setting": "clean", "source": "synthetic-small", "format": "recbole"}
    check_semantics(p)  # a split may name synthetic-<preset> as its source
    return p


def test_stage_writes_a_reproducible_inter_file(tmp_path, params):
    p = _params_with(tmp_path, params, SMALL)
    summary = main(p, "small", str(tmp_path / "a"))
    main(p, "small", str(tmp_path / "b"))
    files = sorted(f.name for f in (tmp_path / "a").iterdir())
    assert files == ["SYNTHETIC.json", "synthetic-small.inter"]
    for name in files:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    lines = (tmp_path / "a" / "synthetic-small.inter").read_text().splitlines()
    assert lines[0] == "user_id:token\titem_id:token\ttimestamp:float" and len(lines) == 1 + SMALL.n_interactions
    meta = json.loads((tmp_path / "a" / "SYNTHETIC.json").read_text())
    assert meta["spec"]["seed"] == SMALL.seed and meta["stats"] == summary == describe(generate(SMALL))


@pytest.mark.parametrize("setting", ["clean", "noisy"])
def test_prepare_on_a_synthetic_preset(tmp_path, params, setting):
    p = _params_with(tmp_path, params, SMALL)
    main(p, "small", str(tmp_path / "raw"))
    split = SplitConfig(name=f"small_{setting}", dataset="small", setting=setting, source="synthetic-small", format="recbole")
    stats = prepare(split, PROTOCOL, tmp_path / "raw", tmp_path / "out")
    # already a 10-core without ratings: every interaction is a positive and survives, ids kept
    assert (stats["n_users"], stats["n_items"], stats["n_interactions"]) == (300, 200, 9_000)
    assert stats["kcore_removed_interactions"] == stats["threshold_removed_interactions"] == stats["duplicates_removed"] == 0
    table = pl.read_parquet(tmp_path / "out" / "interactions.parquet")
    raw = generate(SMALL)
    assert table.sort("user", "item").select("user", "item", "timestamp").equals(raw)
    per_user = np.bincount(raw["user"].to_numpy(), minlength=300)
    expected = np.array([split_sizes(int(n), PROTOCOL.ratios, PROTOCOL.rounding) for n in per_user]).sum(axis=0)
    assert (stats["n_train"], stats["n_valid"], stats["n_test"]) == tuple(int(x) for x in expected)
    assert stats["train_users"] == 300


def test_cli(tmp_path, params):
    p = _params_with(tmp_path, params, SMALL)
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(p, sort_keys=False))
    out = tmp_path / "data" / "raw" / "synthetic-small"
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", "synthesize", "--name", "small", "--out", str(out), "--log", str(tmp_path / "log")],
        cwd=ROOT, env={**os.environ, "PIPELINE_PARAMS": str(params_file)}, capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr
    assert (out / "synthetic-small.inter").is_file() and "synthesize small: 300 users" in (tmp_path / "log").read_text()
