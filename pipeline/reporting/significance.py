"""Paired significance tests of every model against the reference model of its setting.

Pure functions (polars frames in, frames / text out); :mod:`pipeline.reporting.aggregate`
reads the runs' ``per_user.parquet`` files and writes ``results/significance.csv``.

For each (dataset, setting) and each model other than the reference (DiffRec), on each metric
of :data:`SIG_METRICS`:

1. take the seeds both the model and the reference ran (the *shared* seeds);
2. average each user's test value over those seeds, separately for the model and the reference;
3. run ``scipy.stats.wilcoxon(model, reference)`` on the paired per-user averages, two-sided,
   with scipy's defaults: ``zero_method="wilcox"`` (users whose two averages are equal are
   dropped, e.g. both 0), no continuity correction, ``method="auto"`` (more than 50 users: the
   normal approximation with tie correction; up to 50: the exact distribution, or an exhaustive
   sign-flip permutation test when there are ties or zeros). When every difference is zero the
   test has nothing to rank: p = 1 and statistic = 0 (what scipy returns, without its warning).

A cell is marked :data:`MARKS` (``**`` p < 0.01, ``*`` p < 0.05, else nothing). The mark says
*that* the model differs from the reference; the direction is that of the means (``mean`` vs
``mean_reference``, the same numbers as the tables' means when all seeds are shared). No
correction for multiple comparisons is applied.
"""

from __future__ import annotations

import math
from typing import Collection, Sequence

import numpy as np
import polars as pl

# Metrics tested (per-user test values); the paper's headline metrics.
SIG_METRICS: tuple[str, ...] = ("recall@20", "ndcg@20")
# Significance levels, strictest first: p < level gets the mark.
MARKS: tuple[tuple[float, str], ...] = ((0.01, "**"), (0.05, "*"))

COLUMNS = (
    "setting", "dataset", "model", "reference", "metric", "seeds", "n_users", "n_nonzero",
    "mean", "mean_reference", "mean_diff", "statistic", "p_value", "mark",
)
SCHEMA = {
    "setting": pl.String, "dataset": pl.String, "model": pl.String, "reference": pl.String,
    "metric": pl.String, "seeds": pl.String, "n_users": pl.Int64, "n_nonzero": pl.Int64,
    "mean": pl.Float64, "mean_reference": pl.Float64, "mean_diff": pl.Float64,
    "statistic": pl.Float64, "p_value": pl.Float64, "mark": pl.String,
}


def mark(p: float | None) -> str:
    """``**`` for p < 0.01, ``*`` for p < 0.05, ``""`` otherwise (or when p is absent)."""
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return ""
    for level, text in MARKS:
        if p < level:
            return text
    return ""


def legend_levels() -> str:
    """``** p < 0.01, * p < 0.05`` (from :data:`MARKS`)."""
    return ", ".join(f"{text} p < {level:g}" for level, text in MARKS)


def wilcoxon(x: np.ndarray, y: np.ndarray) -> tuple[float, float, int]:
    """Two-sided Wilcoxon signed-rank test of paired samples: (statistic, p-value, n non-zero).

    scipy's defaults (``zero_method="wilcox"``, ``correction=False``, ``method="auto"``);
    all-zero differences give (0.0, 1.0, 0).
    """
    from scipy import stats

    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"wilcoxon: paired samples must be 1-d of equal length, got {x.shape} and {y.shape}")
    n_nonzero = int(np.count_nonzero(x - y))
    if n_nonzero == 0:
        return 0.0, 1.0, 0
    res = stats.wilcoxon(x, y, zero_method="wilcox", correction=False, alternative="two-sided", method="auto")
    return float(res.statistic), float(res.pvalue), n_nonzero


def _seed_average(frame: pl.DataFrame, seeds: Sequence[int], metrics: Sequence[str]) -> pl.DataFrame:
    """user -> mean over ``seeds`` of each metric (every user must appear once per seed)."""
    sel = frame.filter(pl.col("seed").is_in(list(seeds)))
    counts = sel.group_by("user").agg(pl.len().alias("n"))
    if counts.height and (counts["n"] != len(seeds)).any():
        raise ValueError("significance: a user is missing from (or repeated in) some seed's per-user table")
    return sel.group_by("user").agg(pl.col(m).mean() for m in metrics).sort("user")


def significance(
    per_user: pl.DataFrame,
    reference: str,
    metrics: Sequence[str] = SIG_METRICS,
    model_order: Sequence[str] = (),
    setting_order: Sequence[str] = (),
    deterministic: Collection[str] = (),
) -> pl.DataFrame:
    """One row per (setting, dataset, model != reference, metric) with the test's result.

    ``per_user``: test-split per-user values, columns dataset, setting, model, seed, user and
    one column per metric of ``metrics``. (dataset, setting) groups without the reference
    model, and models sharing no seed with it, get no rows. A ``deterministic`` model's runs are
    the same whatever the seed, so it is paired with the reference averaged over all the
    reference's seeds (``seeds`` then lists those): its first run stands for each of those seeds
    and is averaged over them as the reference is, so a user whose reference runs all equal the
    model's value is a zero difference, however the average rounds (it runs one seed, see
    ``pipeline.plan.table_runs``). Rows are sorted by setting
    (``setting_order`` first), dataset, model (``model_order`` first) and metric (``metrics``
    order). The columns are :data:`COLUMNS`.
    """
    rows = []
    groups = per_user.select("dataset", "setting").unique().rows()
    for dataset, setting in groups:
        group = per_user.filter(pl.col("dataset") == dataset, pl.col("setting") == setting)
        ref = group.filter(pl.col("model") == reference)
        if ref.height == 0:
            continue
        ref_seeds = set(ref["seed"].to_list())
        for model in sorted(set(group["model"].to_list()) - {reference}):
            other = group.filter(pl.col("model") == model)
            own = sorted(set(other["seed"].to_list()))
            seeds = sorted(ref_seeds) if model in deterministic else sorted(ref_seeds & set(own))
            if not seeds:
                continue
            if model in deterministic:  # its first run stands for each of the reference's seeds
                one = other.filter(pl.col("seed") == own[0])
                other = pl.concat([one.with_columns(pl.lit(s, dtype=one.schema["seed"]).alias("seed")) for s in seeds])
            a = _seed_average(other, seeds, metrics)
            b = _seed_average(ref, seeds, metrics)
            if a["user"].to_list() != b["user"].to_list():
                raise ValueError(
                    f"significance: {model} and {reference} on {dataset} {setting} were evaluated on different users"
                )
            for metric in metrics:
                x, y = a[metric].to_numpy(), b[metric].to_numpy()
                statistic, p, n_nonzero = wilcoxon(x, y)
                mean_x, mean_y = float(np.mean(x)), float(np.mean(y))
                rows.append({
                    "setting": setting, "dataset": dataset, "model": model, "reference": reference,
                    "metric": metric, "seeds": " ".join(str(s) for s in seeds), "n_users": len(x),
                    "n_nonzero": n_nonzero, "mean": mean_x, "mean_reference": mean_y,
                    "mean_diff": float(np.mean(x - y)), "statistic": statistic, "p_value": p, "mark": mark(p),
                })
    table = pl.DataFrame(rows, schema=SCHEMA)
    settings = list(setting_order) + sorted(set(table["setting"].to_list()) - set(setting_order))
    models = list(model_order) + sorted(set(table["model"].to_list()) - set(model_order))

    def rank(col: str, order: Sequence[str]) -> pl.Expr:
        return pl.col(col).replace_strict(list(order), list(range(len(order))), default=len(order), return_dtype=pl.Int64)

    return (
        table.with_columns(rank("setting", settings).alias("_s"), rank("model", models).alias("_m"),
                           rank("metric", list(metrics)).alias("_k"))
        .sort("_s", "setting", "dataset", "_m", "model", "_k", "metric")
        .select(COLUMNS)
    )


def to_csv(table: pl.DataFrame) -> str:
    """results/significance.csv (floats written so that reading them back gives the same values)."""
    return table.select(COLUMNS).write_csv()


def from_csv(path) -> pl.DataFrame:
    """Read a significance.csv written by :func:`to_csv` back into the frame it came from."""
    table = pl.read_csv(path, schema=SCHEMA)
    return table.with_columns(pl.col("mark").fill_null(""), pl.col("seeds").cast(pl.String))
