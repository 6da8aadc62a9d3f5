"""What the aggregate stage (``pipeline/stages/aggregate.py``: ``python -m pipeline aggregate --runs runs --out results``) writes.

Collects, for exactly the runs that the ``experiments`` blocks name
(:func:`pipeline.plan.table_runs`; other folders under ``runs/`` are ignored, a missing
one is an error), from the folder of the run trained for each (:func:`pipeline.plan.trained_run`:
a temporal run of a model that ignores the time order is its clean twin's),
``<runs>/<split>/<model variant>/seed<seed>/`` ``metrics.json``,
``history.csv`` and ``per_user.parquet``, reads the reference numbers (``paper_results``) and,
optionally, the efficiency benchmark's JSON, and writes, atomically and byte-for-byte
deterministically:

* ``<out>/metrics.csv``: every metric of every run, long format (valid and test);
* ``<out>/runs.csv``: one row per run (best epoch, epochs trained, parameter count);
* ``<out>/metrics.json``: the tables' numbers for ``dvc metrics show`` / ``diff``;
* ``<out>/significance.csv`` (and ``.html``, for reading): the paired Wilcoxon test of every
  model against the reference model (DiffRec) of its dataset and setting
  (:mod:`pipeline.reporting.significance`). In the DAG the tests are the significance stage's
  ``runs/significance.csv`` (``python -m pipeline significance``, the only step that reads
  ``per_user.parquet``), committed to git beside the runs' metrics and passed here with
  ``--significance``: a fresh clone regenerates all of ``results/`` from git alone;
* ``<out>/tables/<setting>.{md,tex,html}``: the paper-style table of a setting (models grouped
  by family x dataset x metrics, mean ± std over seeds, best bold, second underlined, marked
  where significantly different from DiffRec); ``<setting>.csv``: its numbers at full
  precision beside the reference numbers;
* ``<out>/tables/reproduction.{md,tex,html}``: every model with a published or authors'-code
  number, ours beside it with the relative difference;
* ``<out>/tables/tvdiff.{md,tex,html}`` (where TV-Diff's datasets ran under both protocols):
  per dataset, the authors' protocol (test-selected) with the paper's number and Δ beside our
  protocol (validation-selected);
* ``<out>/tables/headline.md``: R@20 / N@20 of every ML-1M setting (the README's results block);
* ``<out>/figures/valid_curves_<setting>.png``, ``test_bars_<setting>.png`` and, with
  ``--efficiency``, ``efficiency.png`` (:mod:`pipeline.reporting.figures`).

The table building lives in :mod:`pipeline.reporting.tables`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from pipeline import plan
from pipeline.io import read_json
from pipeline.reporting import significance as sig
from pipeline.reporting import tables

REQUIRED_KEYS = ("model", "split", "seed", "best_epoch", "epochs_trained", "n_parameters", "valid", "test")
EVAL_SPLITS = ("valid", "test")
# Every model is tested against this variant's runs on the same dataset and setting.
REFERENCE_VARIANT = "diffrec"


def _model_class(model: str, params: dict[str, Any] | None):
    """What the class of a variant declares (``models.<variant>.class``, else the variant's name);
    None for a name no model registered."""
    from pipeline.models.declared import declared_models  # read from the files: no torch

    return declared_models().get(((params or {}).get("models", {}).get(model) or {}).get("class", model))


def display_name(model: str, params: dict[str, Any] | None = None) -> str:
    """A variant's row name: ``models.<variant>.display``, else its class's ``display_name``,
    else its params.yaml key."""
    from pipeline.config import display_names

    if params is not None and model in params.get("models", {}):
        return display_names(params, model)[0]
    cls = _model_class(model, params)
    return cls.display_name if cls else model


def paper_name(model: str, params: dict[str, Any]) -> str | None:
    """The name the reference CSV uses for a variant (its class's display name, or its ``paper``;
    None: no published number applies to it)."""
    from pipeline.config import display_names

    if model in params.get("models", {}):
        return display_names(params, model)[1]
    return display_name(model)


def family(model: str, params: dict[str, Any] | None = None) -> str:
    """A variant's row group in the tables: its class's ``family`` (classic, generative, diffusion)."""
    cls = _model_class(model, params)
    return cls.family if cls else "other"


def deterministic(model: str, params: dict[str, Any] | None = None) -> bool:
    """Whether a variant's class says every seed gives the same result (the tables show one run)."""
    cls = _model_class(model, params)
    return bool(cls and cls.deterministic)


def run_variants(params: dict[str, Any]) -> list[str]:
    """Model variants in the order the experiments name them."""
    return list(dict.fromkeys(run.model for run in plan.table_runs(params)))


def run_path(runs_dir: str | Path, split: str, model: str, seed: int, name: str = "metrics.json") -> Path:
    return Path(runs_dir) / split / model / f"seed{seed}" / name


def _require(params: dict[str, Any], runs_dir: str | Path, name: str, hint: str) -> list[tuple[plan.Run, plan.Run]]:
    """(table run, the run trained for it) of every run the tables show; an error naming every
    trained run that lacks ``name``."""
    expected = [(run, plan.trained_run(params, run)) for run in plan.table_runs(params)]
    paths = dict.fromkeys(run_path(runs_dir, *trained, name) for _, trained in expected)
    missing = [str(path) for path in paths if not path.is_file()]
    if missing:
        raise FileNotFoundError(
            f"aggregate: {len(missing)} of {len(paths)} run(s) missing {name}: " + ", ".join(missing) + f" ({hint})"
        )
    return expected


def _ident(params: dict[str, Any], split: str, model: str, seed: int) -> dict[str, Any]:
    cfg = params["splits"][split]
    return {"dataset": cfg["dataset"], "setting": cfg["setting"], "model": display_name(model, params), "seed": seed}


def collect_runs(params: dict[str, Any], runs_dir: str | Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Read the runs the experiments block names; returns (runs, metrics) frames.

    ``runs``: split_name, dataset, setting, model, seed, best_epoch, epochs_trained,
    n_parameters. ``metrics``: dataset, setting, model, seed, split (valid/test), metric,
    value. ``model`` is the display name in both.
    """
    expected = _require(params, runs_dir, "metrics.json", "train them first, or change experiments in params")

    names = {m: display_name(m, params) for m in run_variants(params)}
    clash = sorted({n for n in names.values() if list(names.values()).count(n) > 1})
    if clash:
        raise ValueError(f"aggregate: models {sorted(names)} share the display name(s) {clash}")

    run_rows, metric_rows = [], []
    for (split, model, seed), trained in expected:
        path = run_path(runs_dir, *trained)
        record = read_json(path)
        absent = [k for k in REQUIRED_KEYS if k not in record]
        if absent:
            raise ValueError(f"aggregate: {path} lacks key(s) {absent}")
        found = (record["split"], record["model"], int(record["seed"]))
        if found != tuple(trained):
            raise ValueError(f"aggregate: {path} holds the run {found}, expected {tuple(trained)}")
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


def collect_per_user(params: dict[str, Any], runs_dir: str | Path, metrics=sig.SIG_METRICS) -> pl.DataFrame:
    """Test-split per-user values of ``metrics`` of every planned run (``per_user.parquet``):
    dataset, setting, model (display name), seed, user, one column per metric."""
    expected = _require(
        params, runs_dir, "per_user.parquet",
        "per-user tables are DVC outputs, not in git: `dvc pull` them, or train the runs",
    )
    frames = []
    for (split, model, seed), trained in expected:
        path = run_path(runs_dir, *trained, "per_user.parquet")
        table = pl.read_parquet(path)
        absent = [c for c in ("user", "split", *metrics) if c not in table.columns]
        if absent:
            raise ValueError(f"aggregate: {path} lacks column(s) {absent}")
        ident = _ident(params, split, model, seed)
        frames.append(
            table.filter(pl.col("split") == "test")
            .select(pl.col("user").cast(pl.Int64), *(pl.col(m).cast(pl.Float64) for m in metrics))
            .with_columns(pl.lit(v).alias(k) for k, v in ident.items())
        )
    schema = {"dataset": pl.String, "setting": pl.String, "model": pl.String, "seed": pl.Int64, "user": pl.Int64,
              **{m: pl.Float64 for m in metrics}}
    if not frames:
        return pl.DataFrame(schema=schema)
    return pl.concat(frames).select(list(schema)).cast(schema)


def collect_history(params: dict[str, Any], runs_dir: str | Path, metric: str) -> pl.DataFrame:
    """Validation ``metric`` per evaluated epoch of every planned run (``history.csv``, column
    ``valid_<metric>``; epochs without an evaluation dropped): dataset, setting, model, seed,
    epoch, value."""
    expected = _require(params, runs_dir, "history.csv", "train them first, or change experiments in params")
    column = f"valid_{metric}"
    frames = []
    for (split, model, seed), trained in expected:
        path = run_path(runs_dir, *trained, "history.csv")
        table = pl.read_csv(path, infer_schema=False)
        if "epoch" not in table.columns or column not in table.columns:
            raise ValueError(f"aggregate: {path} lacks the column(s) epoch / {column}")
        ident = _ident(params, split, model, seed)
        frames.append(
            table.select(pl.col("epoch").cast(pl.Int64), pl.col(column).cast(pl.Float64).alias("value"))
            .filter(pl.col("value").is_not_null())
            .with_columns(pl.lit(v).alias(k) for k, v in ident.items())
        )
    schema = {"dataset": pl.String, "setting": pl.String, "model": pl.String, "seed": pl.Int64,
              "epoch": pl.Int64, "value": pl.Float64}
    if not frames:
        return pl.DataFrame(schema=schema)
    return pl.concat(frames).select(list(schema)).cast(schema)


def load_efficiency(path: str | Path | None) -> dict[str, Any] | None:
    """``results/efficiency.json`` of ``benchmarks/bench_efficiency.py`` (None: no figure)."""
    if not path:
        return None
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"aggregate: efficiency file not found: {path} (python benchmarks/bench_efficiency.py writes it)")
    record = read_json(path)
    keys = {"dataset", "model", "n_parameters", "peak_rss_mb", "seconds_per_epoch", "seconds_per_eval"}
    if not record.get("rows") or any(set(r) != keys for r in record["rows"]):
        raise ValueError(f"aggregate: {path}: expected 'rows' of {sorted(keys)}")
    return record


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


def setting_order(params: dict[str, Any]) -> list[str]:
    """The settings of the planned runs, in the tables' order."""
    present = {params["splits"][run.split]["setting"] for run in plan.table_runs(params)}
    return [s for s in tables.SETTINGS if s in present] + sorted(present - set(tables.SETTINGS))


def significance_table(params: dict[str, Any], runs_dir: str | Path) -> pl.DataFrame:
    """Every planned model against DiffRec from the runs' per-user tables (the significance
    stage; its CSV is committed, so aggregation needs no per-user table)."""
    model_order = [display_name(m, params) for m in run_variants(params)]
    return sig.significance(
        collect_per_user(params, runs_dir), display_name(REFERENCE_VARIANT, params),
        model_order=model_order, setting_order=setting_order(params),
        deterministic={display_name(m, params) for m in run_variants(params) if deterministic(m, params)},
    )


def build_outputs(
    params: dict[str, Any],
    runs_dir: str | Path,
    out_dir: str | Path,
    efficiency: str | Path | None = None,
    significance: pl.DataFrame | None = None,
) -> dict[Path, str | bytes]:
    """Every output file of the stage and its content (text, or bytes for PNGs), in write order.

    ``significance``: use this table (e.g. a committed significance.csv read back with
    :func:`pipeline.reporting.significance.from_csv`) instead of testing the runs' per-user
    tables, which then need not exist.
    """
    from pipeline.reporting import figures

    out_dir = Path(out_dir)
    runs, metrics = collect_runs(params, runs_dir)
    reference = load_reference(params.get("paper_results"))
    select_metric = params["training"]["select_metric"]
    variants = run_variants(params)
    model_order = [display_name(m, params) for m in variants]
    paper_names = {display_name(m, params): paper_name(m, params) for m in variants}
    reference_model = display_name(REFERENCE_VARIANT, params)
    settings = setting_order(params)
    if significance is None:  # else given: the significance stage's committed table
        significance = significance_table(params, runs_dir)
    history = collect_history(params, runs_dir, select_metric)
    record = load_efficiency(efficiency)
    summary = tables.summarize(
        metrics, reference, model_order=model_order, paper_names=paper_names, significance=significance
    )

    outputs: dict[Path, str | bytes] = {
        out_dir / "metrics.csv": tables.metrics_csv(metrics),
        out_dir / "runs.csv": tables.runs_csv(runs),
        out_dir / "metrics.json": tables.metrics_json(summary),
        out_dir / "significance.csv": sig.to_csv(significance),
        out_dir / "significance.html": tables.to_html(tables.significance_view(significance, reference_model)),
    }
    families = {display_name(m, params): family(m, params) for m in variants}
    one_run = {display_name(m, params) for m in variants if deterministic(m, params)}
    headline_settings = [s for s in settings if s in tables.HEADLINE_SETTINGS]
    headline = tables.headline_table(summary, headline_settings, model_order, reference_model, families)
    outputs[out_dir / "tables" / "headline.md"] = tables.to_markdown(headline, title=False)
    for setting in settings:
        base = out_dir / "tables" / setting
        table = tables.setting_table(
            summary, runs, setting, select_metric, families, significance, reference_model, deterministic=one_run
        )
        outputs[base.with_suffix(".md")] = tables.to_markdown(table)
        outputs[base.with_suffix(".csv")] = tables.setting_csv(summary, setting)
        outputs[base.with_suffix(".tex")] = tables.to_latex(table)
        outputs[base.with_suffix(".html")] = tables.to_html(table)
    if tables.has_own_split_table(settings):
        own = tables.own_split_table(summary, runs, select_metric, families, deterministic=one_run,
                                     reference_model=reference_model)
        base = out_dir / "tables" / "tvdiff"
        outputs[base.with_suffix(".md")] = tables.to_markdown(own)
        outputs[base.with_suffix(".tex")] = tables.to_latex(own)
        outputs[base.with_suffix(".html")] = tables.to_html(own)
    reproduction = tables.reproduction_table(summary, reference, runs, settings, select_metric)
    base = out_dir / "tables" / "reproduction"
    outputs[base.with_suffix(".md")] = tables.to_markdown(reproduction)
    outputs[base.with_suffix(".tex")] = tables.to_latex(reproduction)
    outputs[base.with_suffix(".html")] = tables.to_html(reproduction)
    grouped = tables.by_family(model_order, families)  # the tables' row order
    for setting in settings:
        outputs[out_dir / "figures" / f"valid_curves_{setting}.png"] = figures.validation_curves(
            history, setting, select_metric, grouped
        )
        outputs[out_dir / "figures" / f"test_bars_{setting}.png"] = figures.bar_chart(summary, setting, grouped)
    if record is not None:
        outputs[out_dir / "figures" / "efficiency.png"] = figures.efficiency(record)
    return outputs
