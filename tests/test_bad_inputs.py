"""Bad command-line input and damaged input files are refused before any stage runs or trains:
``python -m pipeline ...`` exits with status 2 and one ``error: ...`` line naming the problem.

(Corrupt checkpoints: tests/test_trainer.py; impossible training combinations: tests/test_config.py.)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import polars as pl
import pytest

from pipeline.__main__ import build_parser, main
from pipeline.stages.prepare import split_stats
from planted import write_planted

ROOT = Path(__file__).resolve().parents[1]
E2E_PARAMS = (ROOT / "tests" / "e2e" / "params.yaml").resolve()  # splits ml-100k_{clean,noisy,temporal}, format recbole
N_USERS, N_ITEMS, GROUPS = 30, 30, 3


def prepared(folder: Path, setting: str = "clean") -> Path:
    """A planted table with the stats.json the prepare stage would write for ml-100k_<setting>."""
    write_planted(folder, N_USERS, N_ITEMS, GROUPS)
    table = pl.read_parquet(folder / "interactions.parquet")
    stats = {"dataset": "ml-100k", "setting": setting, "format": "recbole", **split_stats(table, N_USERS, N_ITEMS)}
    (folder / "stats.json").write_text(json.dumps(stats))
    return folder


def train(tmp_path: Path, data: Path, split: str = "ml-100k_clean") -> list[str]:
    out = tmp_path / "run"
    return ["--params", str(E2E_PARAMS), "train", "--split", split, "--model", "diffrec", "--seed", "1",
            "--data", str(data), "--out", str(out)]  # fmt: skip


def refused(argv: list[str], capsys) -> str:
    """Run the command in-process; it must exit with status 2; returns its stderr."""
    capsys.readouterr()
    assert main(argv) == 2
    return capsys.readouterr().err


def test_unknown_split_is_refused_by_every_stage_that_takes_one(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # nothing may be written, and surely not into the repository
    stages = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    with_split = {name: p for name, p in stages.items() if "--split" in p._option_string_actions}
    assert {"prepare", "train", "tune", "embed", "import-embeddings", "cluster"} <= set(with_split)
    for name, parser in with_split.items():
        argv = ["--params", str(E2E_PARAMS), name]
        for action in parser._actions:
            if action.required:
                argv += [action.option_strings[0], "ml-100k_clen" if action.dest == "split" else "1"]
        assert refused(argv, capsys) == (
            f"error: params: key 'splits': --split 'ml-100k_clen' is not a split of {E2E_PARAMS}; "
            "known splits: ['ml-100k_clean', 'ml-100k_noisy', 'ml-100k_temporal']\n"
        ), name
    assert list(tmp_path.iterdir()) == []


def test_data_of_another_split_is_refused(tmp_path, capsys):
    data = prepared(tmp_path / "ml-100k_noisy", setting="noisy")
    assert refused(train(tmp_path, data, split="ml-100k_clean"), capsys) == (
        f"error: {data}/stats.json records another split ({{'dataset': 'ml-100k', 'setting': 'noisy', 'format': 'recbole'}}) "
        f"than --split 'ml-100k_clean' ({{'dataset': 'ml-100k', 'setting': 'clean', 'format': 'recbole'}}); "
        "pass the folder the `prepare` stage made for 'ml-100k_clean' (data/prepared/ml-100k_clean)\n"
    )
    assert not (tmp_path / "run").exists()  # refused before training


def test_table_that_disagrees_with_its_stats_is_refused(tmp_path, capsys):
    data = prepared(tmp_path / "ml-100k_clean")
    table = pl.read_parquet(data / "interactions.parquet")
    table.filter(~((pl.col("user") == 0) & (pl.col("split") == "test"))).write_parquet(data / "interactions.parquet")
    stats = json.loads((data / "stats.json").read_text())
    n, n_test = stats["n_interactions"], stats["n_test"]
    assert refused(train(tmp_path, data), capsys) == (
        f"error: {data}/interactions.parquet does not match {data}/stats.json "
        f"(n_interactions {n} there, {n - 2} here; n_test {n_test} there, {n_test - 2} here); "
        "both are made by the `prepare` stage: delete them and rerun prepare\n"
    )
    assert not (tmp_path / "run").exists()


def test_truncated_parquet_names_the_file_and_its_stage(tmp_path, capsys):
    data = prepared(tmp_path / "ml-100k_clean")
    path = data / "interactions.parquet"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # a copy cut short
    assert refused(train(tmp_path, data), capsys) == (
        f"error: {path} is not a readable Parquet file (parquet: File out of specification: The file must end with "
        "PAR1 or PARE); it is made by the `prepare` stage: delete it and rerun prepare\n"
    )
    assert not (tmp_path / "run").exists()
