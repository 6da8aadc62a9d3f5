"""Aggregate stage: ``python -m pipeline aggregate --runs runs --out results``.

Collects ``<runs>/<split>/<model variant>/seed<seed>/metrics.json`` for exactly the runs that
the ``experiments`` groups name (:func:`pipeline.config.planned_runs`) (other folders under
``runs/`` are ignored; a missing one is an error), reads the reference numbers
(``paper_results``) and writes, atomically and byte-for-byte deterministically:

* ``<out>/metrics.csv``: every metric of every run, long format (valid and test);
* ``<out>/runs.csv``: one row per run (best epoch, epochs trained, parameter count);
* ``<out>/tables/<setting>.{md,csv,tex}``: ours (mean ± std over seeds) next to the paper's
  numbers and the authors' code measured on our kind of machine, per setting.

The table building itself lives in :mod:`pipeline.reporting.tables`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from pipeline.io import read_json, write_text
from pipeline.reporting import tables

REQUIRED_KEYS = ("model", "split", "seed", "best_epoch", "epochs_trained", "n_parameters", "valid", "test")
EVAL_SPLITS = ("valid", "test")


def display_name(model: str, params: dict[str, Any] | None = None) -> str:
    """A variant's row name: ``models.<variant>.display``, else its class's ``display_name``,
    else its params.yaml key."""
    from pipeline.config import display_names
    from pipeline.models import MODELS  # local import: models import torch

    if params is not None and model in params.get("models", {}):
        return display_names(params, model)[0]
    return getattr(MODELS.get(model), "display_name", None) or model


def paper_name(model: str, params: dict[str, Any]) -> str:
    """The name the reference CSV uses for a variant (its class's display name)."""
    from pipeline.config import display_names

    if model in params.get("models", {}):
        return display_names(params, model)[1]
    return display_name(model)


def run_variants(params: dict[str, Any]) -> list[str]:
    """Model variants in the order the experiments name them."""
    from pipeline.config import planned_runs

    return list(dict.fromkeys(model for _, model, _ in planned_runs(params)))


def run_path(runs_dir: str | Path, split: str, model: str, seed: int) -> Path:
    return Path(runs_dir) / split / model / f"seed{seed}" / "metrics.json"


def collect_runs(params: dict[str, Any], runs_dir: str | Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Read the runs the experiments block names; returns (runs, metrics) frames.

    ``runs``: split_name, dataset, setting, model, seed, best_epoch, epochs_trained,
    n_parameters. ``metrics``: dataset, setting, model, seed, split (valid/test), metric,
    value. ``model`` is the display name in both.
    """
    from pipeline.config import planned_runs

    expected = planned_runs(params)
    missing = [str(run_path(runs_dir, *key)) for key in expected if not run_path(runs_dir, *key).is_file()]
    if missing:
        raise FileNotFoundError(
            f"aggregate: {len(missing)} of {len(expected)} run(s) missing metrics.json: "
            + ", ".join(missing)
            + " (train them first, or change experiments in params)"
        )

    names = {m: display_name(m, params) for m in run_variants(params)}
    clash = sorted({n for n in names.values() if list(names.values()).count(n) > 1})
    if clash:
        raise ValueError(f"aggregate: models {sorted(names)} share the display name(s) {clash}")

    run_rows, metric_rows = [], []
    for split, model, seed in expected:
        path = run_path(runs_dir, split, model, seed)
        record = read_json(path)
        absent = [k for k in REQUIRED_KEYS if k not in record]
        if absent:
            raise ValueError(f"aggregate: {path} lacks key(s) {absent}")
        found = (record["split"], record["model"], int(record["seed"]))
        if found != (split, model, seed):
            raise ValueError(f"aggregate: {path} holds the run {found}, expected {(split, model, seed)}")
        cfg = params["splits"][split]
        ident = {"dataset": cfg["dataset"], "setting": cfg["setting"], "model": names[model], "seed": seed}
        run_rows.append(
            {"split_name": split, **ident, **{k: int(record[k]) for k in ("best_epoch", "epochs_trained", "n_parameters")}}
        )
        for eval_split in EVAL_SPLITS:
            for metric, value in record[eval_split].items():
                metric_rows.append({**ident, "split": eval_split, "metric": metric, "value": float(value)})

    runs = pl.DataFrame(
        run_rows,
        schema={"split_name": pl.String, "dataset": pl.String, "setting": pl.String, "model": pl.String,
                "seed": pl.Int64, "best_epoch": pl.Int64, "epochs_trained": pl.Int64, "n_parameters": pl.Int64},
    )
    metrics = pl.DataFrame(
        metric_rows,
        schema={"dataset": pl.String, "setting": pl.String, "model": pl.String, "seed": pl.Int64,
                "split": pl.String, "metric": pl.String, "value": pl.Float64},
    )
    return runs, metrics


def load_reference(path: str | Path | None) -> pl.DataFrame:
    """The comparable rows of the paper-results CSV (see :func:`tables.reference_table`)."""
    if not path:
        schema = {"source": pl.String, "setting": pl.String, "dataset": pl.String, "model": pl.String,
                  "metric": pl.String, "value": pl.Float64, "note": pl.String}
        return tables.reference_table(pl.DataFrame(schema=schema))
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"aggregate: paper_results file not found: {path} (relative to {Path.cwd()})")
    raw = pl.read_csv(path, infer_schema=False).with_columns(pl.col("value").cast(pl.Float64))
    return tables.reference_table(raw)


def build_outputs(params: dict[str, Any], runs_dir: str | Path, out_dir: str | Path) -> dict[Path, str]:
    """Every output file of the stage and its text, in write order."""
    out_dir = Path(out_dir)
    runs, metrics = collect_runs(params, runs_dir)
    reference = load_reference(params.get("paper_results"))
    select_metric = params["training"]["select_metric"]
    variants = run_variants(params)
    model_order = [display_name(m, params) for m in variants]
    paper_names = {display_name(m, params): paper_name(m, params) for m in variants}
    summary = tables.summarize(metrics, reference, model_order=model_order, paper_names=paper_names)

    outputs = {
        out_dir / "metrics.csv": tables.metrics_csv(metrics),
        out_dir / "runs.csv": tables.runs_csv(runs),
    }
    present = set(runs["setting"].to_list())
    settings = [s for s in tables.SETTINGS if s in present] + sorted(present - set(tables.SETTINGS))
    for setting in settings:
        base = out_dir / "tables" / setting
        outputs[base.with_suffix(".md")] = tables.setting_markdown(summary, reference, runs, setting, select_metric)
        outputs[base.with_suffix(".csv")] = tables.setting_csv(summary, setting)
        outputs[base.with_suffix(".tex")] = tables.setting_latex(summary, runs, setting, select_metric)
    return outputs


def main(params: dict[str, Any], runs_dir: str | Path, out_dir: str | Path) -> None:
    outputs = build_outputs(params, runs_dir, out_dir)  # everything computed before anything is written
    for path, text in outputs.items():
        write_text(path, text)
        print(f"wrote {path}", flush=True)
