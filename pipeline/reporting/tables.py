"""Pure table building for the aggregate stage: polars DataFrames in, text out.

Nothing here touches the file system; :mod:`pipeline.reporting.aggregate` collects the runs,
reads the reference CSV and writes what these functions return. Every output is a
deterministic function of its inputs (stable sorts, fixed number formatting, no timestamps).

Frames used here:

* ``metrics``: one row per (dataset, setting, model, seed, split, metric) with ``value``;
  ``split`` is ``valid`` or ``test``; ``model`` is the display name.
* ``runs``: one row per run: split_name, dataset, setting, model, seed, best_epoch,
  epochs_trained, n_parameters.
* ``reference``: published / externally measured numbers (see :func:`reference_table`):
  kind (``paper`` | ``authors_code``), source, setting, dataset, model, metric, value, note.
* ``summary``: one row per (setting, dataset, model, metric) of the table metrics (see
  :func:`summarize`).
"""

from __future__ import annotations

import math
from typing import Sequence

import polars as pl

# The paper's metrics, in the paper's column order.
TABLE_METRICS: tuple[str, ...] = ("recall@10", "recall@20", "ndcg@10", "ndcg@20")
# Settings whose reference numbers are comparable with our splits.
SETTINGS: tuple[str, ...] = ("clean", "noisy", "temporal")
# Reference sources are recognised by the start of their `source` field.
PAPER_PREFIX = "DiffRec (SIGIR 2023)"
AUTHORS_CODE_PREFIX = "official DiffRec code"
KIND_LABELS = {"paper": "Paper", "authors_code": "Authors' code (2-core CPU)"}

DASH = "–"  # shown where a number is absent
GENERATED_BY = "python -m pipeline aggregate"

METRICS_COLUMNS = ("dataset", "setting", "model", "seed", "split", "metric", "value")
RUNS_COLUMNS = ("dataset", "setting", "model", "seed", "best_epoch", "epochs_trained", "n_parameters")
SUMMARY_COLUMNS = (
    "setting", "dataset", "model", "metric", "n_seeds", "mean", "std",
    "paper", "rel_diff_paper", "authors_code", "rel_diff_authors_code",
)
REFERENCE_COLUMNS = ("kind", "source", "setting", "dataset", "model", "metric", "value", "note")


# --------------------------------------------------------------------------------------------
# Number formatting


def fmt_value(x: float | None, digits: int = 4) -> str:
    """A metric value with a fixed number of decimals; DASH when absent."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return DASH
    return f"{x:.{digits}f}"


def fmt_rel(x: float | None) -> str:
    """A relative difference (ours / reference - 1) as a signed percent: ``-4.0%``, ``+1.2%``."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return DASH
    pct = round(x * 100, 1)
    if pct == 0:
        pct = 0.0  # never "-0.0%"
    return f"{pct:+.1f}%"


def fmt_ours(mean: float | None, std: float | None, n: int | None) -> str:
    """``0.1715 ± 0.0012 (n=3)``; the ± part is left out when std is undefined (n = 1)."""
    if mean is None or not n:
        return DASH
    text = fmt_value(mean)
    if std is not None and not math.isnan(std):
        text += f" ± {fmt_value(std)}"
    return f"{text} (n={n})"


def _metric_sort_keys(col: str = "metric") -> list[pl.Expr]:
    """Sort metrics by name, then numerically by cut-off (recall@10 < recall@20 < recall@100)."""
    parts = pl.col(col).str.split_exact("@", 1)
    return [parts.struct.field("field_0"), parts.struct.field("field_1").cast(pl.Int64, strict=False), pl.col(col)]


def _rank(col: str, order: Sequence[str]) -> pl.Expr:
    """Position of ``col`` in ``order``; values not listed sort after, alphabetically."""
    return pl.col(col).replace_strict(list(order), list(range(len(order))), default=len(order), return_dtype=pl.Int64)


# --------------------------------------------------------------------------------------------
# Frames


def reference_table(raw: pl.DataFrame) -> pl.DataFrame:
    """Classify the rows of the paper-results CSV.

    ``raw`` has the CSV's columns (source, setting, dataset, model, metric, value, note). Rows
    whose source starts with :data:`PAPER_PREFIX` are the paper's numbers (kind ``paper``),
    :data:`AUTHORS_CODE_PREFIX` the authors' code measured on our kind of machine (kind
    ``authors_code``). Other sources, and settings outside :data:`SETTINGS` (e.g. TV-Diff's
    ``own-split``), are not comparable and are dropped. Two rows for one cell are an error.
    """
    missing = sorted(set(REFERENCE_COLUMNS) - {"kind"} - set(raw.columns))
    if missing:
        raise ValueError(f"paper results: missing columns {missing}; expected {list(REFERENCE_COLUMNS[1:])}")
    source = pl.col("source").fill_null("")
    table = (
        raw.with_columns(
            pl.when(source.str.starts_with(PAPER_PREFIX))
            .then(pl.lit("paper"))
            .when(source.str.starts_with(AUTHORS_CODE_PREFIX))
            .then(pl.lit("authors_code"))
            .otherwise(pl.lit(None, dtype=pl.String))
            .alias("kind"),
            pl.col("value").cast(pl.Float64),
            pl.col("note").cast(pl.String).fill_null(""),
        )
        .filter(pl.col("kind").is_not_null(), pl.col("setting").is_in(list(SETTINGS)))
        .select(REFERENCE_COLUMNS)
    )
    key = ["kind", "setting", "dataset", "model", "metric"]
    dup = table.filter(pl.len().over(key) > 1).sort(key)
    if dup.height:
        row = dup.row(0, named=True)
        raise ValueError(
            "paper results: more than one {kind} value for {setting}/{dataset}/{model}/{metric}".format(**row)
        )
    return table.sort(key)


def summarize(
    metrics: pl.DataFrame,
    reference: pl.DataFrame,
    model_order: Sequence[str] = (),
    table_metrics: Sequence[str] = TABLE_METRICS,
    paper_names: dict[str, str] | None = None,
) -> pl.DataFrame:
    """Test-split mean, sample std and n over seeds, next to the reference numbers.

    One row per (setting, dataset, model, metric) that we ran, for ``table_metrics``;
    ``rel_diff_*`` = mean / reference - 1 (null where the reference is absent or zero).
    Sorted by setting, dataset, model (``model_order`` first, then alphabetically) and metric
    (``table_metrics`` order). ``paper_names`` maps a row name to the model name the reference
    uses (e.g. "L-DiffRec (released emb.)" -> "L-DiffRec"); by default they are the same.
    """
    key = ["setting", "dataset", "model", "metric"]
    ours = (
        metrics.filter(pl.col("split") == "test", pl.col("metric").is_in(list(table_metrics)))
        .sort([*key, "seed"])
        .group_by(key, maintain_order=True)
        .agg(
            pl.len().cast(pl.Int64).alias("n_seeds"),
            pl.col("value").mean().alias("mean"),
            pl.col("value").std(ddof=1).alias("std"),
        )
    )
    ours = ours.with_columns(pl.col("model").replace(paper_names or {}).alias("_paper_model"))
    ref_key = ["setting", "dataset", "_paper_model", "metric"]
    wide = {}
    for kind in ("paper", "authors_code"):
        wide[kind] = reference.filter(pl.col("kind") == kind).select(
            "setting", "dataset", pl.col("model").alias("_paper_model"), "metric", pl.col("value").alias(kind)
        )
    summary = ours.join(wide["paper"], on=ref_key, how="left").join(wide["authors_code"], on=ref_key, how="left")

    def rel(ref: str) -> pl.Expr:
        return pl.when(pl.col(ref).is_not_null() & (pl.col(ref) != 0)).then(pl.col("mean") / pl.col(ref) - 1)

    summary = summary.with_columns(
        rel("paper").alias("rel_diff_paper"),
        rel("authors_code").alias("rel_diff_authors_code"),
    )
    models = list(model_order) + sorted(set(summary["model"].to_list()) - set(model_order))
    return (
        summary.with_columns(_rank("model", models).alias("_m"), _rank("metric", table_metrics).alias("_k"))
        .sort("setting", "dataset", "_m", "_k", "metric")
        .select(SUMMARY_COLUMNS)
        .with_columns(pl.col(c).cast(pl.Float64) for c in SUMMARY_COLUMNS[5:])
    )


# --------------------------------------------------------------------------------------------
# CSV


def metrics_csv(metrics: pl.DataFrame) -> str:
    """results/metrics.csv: long format, sorted by dataset, setting, model, seed, split, metric."""
    table = metrics.sort(["dataset", "setting", "model", "seed", "split", *_metric_sort_keys()])
    return table.select(METRICS_COLUMNS).write_csv()


def runs_csv(runs: pl.DataFrame) -> str:
    """results/runs.csv: one row per run, sorted by dataset, setting, model, seed."""
    return runs.sort("dataset", "setting", "model", "seed").select(RUNS_COLUMNS).write_csv()


def setting_csv(summary: pl.DataFrame, setting: str) -> str:
    """results/tables/<setting>.csv: the summary rows of one setting (full precision)."""
    return summary.filter(pl.col("setting") == setting).select(SUMMARY_COLUMNS).write_csv()


# --------------------------------------------------------------------------------------------
# Markdown


def _join(values) -> str:
    return ", ".join(str(v) for v in values)


def _provenance(runs: pl.DataFrame, setting: str, select_metric: str) -> dict[str, str]:
    """What a setting's table is made of: split names, models, seeds, the selection rule."""
    sel = runs.filter(pl.col("setting") == setting)
    return {
        "splits": _join(sorted(set(sel["split_name"].to_list()))),
        "models": _join(sorted(set(sel["model"].to_list()))),
        "seeds": _join(sorted(set(sel["seed"].to_list()))),
        "n_runs": f"{sel.height} run" + ("" if sel.height == 1 else "s"),
        "select": select_metric,
    }


def _reference_used(summary: pl.DataFrame, reference: pl.DataFrame, setting: str) -> pl.DataFrame:
    """Reference rows that appear in this setting's table."""
    key = ["setting", "dataset", "model", "metric"]
    cells = summary.filter(pl.col("setting") == setting).select(key)
    return reference.join(cells, on=key, how="semi")


def setting_markdown(
    summary: pl.DataFrame,
    reference: pl.DataFrame,
    runs: pl.DataFrame,
    setting: str,
    select_metric: str,
) -> str:
    """results/tables/<setting>.md: a header, then one table per dataset (rows: model x metric)."""
    prov = _provenance(runs, setting, select_metric)
    rows = summary.filter(pl.col("setting") == setting)
    used = _reference_used(summary, reference, setting)
    lines = [
        f"# Results: {setting} setting",
        "",
        f"Generated by `{GENERATED_BY}` from the runs of split(s) {prov['splits']}, "
        f"model(s) {prov['models']}, seed(s) {prov['seeds']} ({prov['n_runs']}); do not edit by hand.",
        "",
        f"**Ours**: test-split metrics at the epoch with the best validation {prov['select']}, "
        "mean ± sample standard deviation over seeds (n = number of seeds). "
        "**Δ** = ours / reference − 1.",
    ]
    for kind in ("paper", "authors_code"):
        sources = sorted(set(used.filter(pl.col("kind") == kind)["source"].to_list()))
        if sources:
            lines += ["", f"**{KIND_LABELS[kind]}**: " + "; ".join(s.rstrip(".") for s in sources) + "."]

    cols = ["Model", "Metric", "Ours (mean ± std, n)", "Paper", "Δ vs paper",
            KIND_LABELS["authors_code"], "Δ vs authors' code"]
    align = ["---", "---", "---:", "---:", "---:", "---:", "---:"]
    for dataset in sorted(set(rows["dataset"].to_list())):
        lines += ["", f"## {dataset}", "", "| " + " | ".join(cols) + " |", "|" + "|".join(align) + "|"]
        for r in rows.filter(pl.col("dataset") == dataset).iter_rows(named=True):
            cells = [
                r["model"],
                r["metric"],
                fmt_ours(r["mean"], r["std"], r["n_seeds"]),
                fmt_value(r["paper"]),
                fmt_rel(r["rel_diff_paper"]),
                fmt_value(r["authors_code"]),
                fmt_rel(r["rel_diff_authors_code"]),
            ]
            lines.append("| " + " | ".join(cells) + " |")

    notes = (
        used.filter(pl.col("note") != "")
        .select("kind", "dataset", "model", "note")
        .unique()
        .with_columns(_rank("kind", ["paper", "authors_code"]).alias("_k"))
        .sort("_k", "dataset", "model", "note")
    )
    if notes.height:
        lines += ["", "Notes on the reference numbers:", ""]
        for r in notes.iter_rows(named=True):
            lines.append(f"- {KIND_LABELS[r['kind']]}, {r['dataset']} {r['model']}: {r['note']}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# LaTeX

_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                  "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
_LATEX_METRIC = {"recall": "Recall", "ndcg": "NDCG", "precision": "Precision", "mrr": "MRR"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))


def _tex_value(x: float | None) -> str:
    return "--" if x is None or math.isnan(x) else f"{x:.4f}"


def _tex_rel(x: float | None) -> str:
    if x is None or math.isnan(x):
        return "--"
    text = fmt_rel(x)
    return f"${text[0]}${text[1:-1]}\\%"


def _tex_metric(metric: str) -> str:
    name, _, k = metric.partition("@")
    return latex_escape(f"{_LATEX_METRIC.get(name, name)}@{k}" if k else _LATEX_METRIC.get(name, name))


def setting_latex(
    summary: pl.DataFrame,
    runs: pl.DataFrame,
    setting: str,
    select_metric: str,
    table_metrics: Sequence[str] = TABLE_METRICS,
) -> str:
    """results/tables/<setting>.tex: a booktabs tabular, paper-style.

    Columns: dataset x metric; rows: per model, ours (mean ± std), the paper's value and Δ,
    and, where any exist for the setting, the authors' code values and Δ.
    """
    prov = _provenance(runs, setting, select_metric)
    rows = summary.filter(pl.col("setting") == setting)
    datasets = sorted(set(rows["dataset"].to_list()))
    models = list(dict.fromkeys(rows["model"].to_list()))  # summary order
    with_authors = rows["authors_code"].is_not_null().any()
    cell = {(r["dataset"], r["model"], r["metric"]): r for r in rows.iter_rows(named=True)}
    k = len(table_metrics)

    lines = [
        f"% Generated by `{GENERATED_BY}`; do not edit by hand.",
        f"% Runs: split(s) {prov['splits']}; model(s) {prov['models']}; seed(s) {prov['seeds']}.",
        f"% Ours: test metrics at the epoch with the best validation {prov['select']}, "
        "mean $\\pm$ sample std over seeds; Delta = ours / reference - 1.",
        "% Requires \\usepackage{booktabs}.",
        "\\begin{tabular}{ll" + "r" * (k * len(datasets)) + "}",
        "\\toprule",
        " & & " + " & ".join(f"\\multicolumn{{{k}}}{{c}}{{{latex_escape(d)}}}" for d in datasets) + " \\\\",
        "".join(f"\\cmidrule(lr){{{3 + i * k}-{2 + (i + 1) * k}}}" for i in range(len(datasets))),
        "Model & & " + " & ".join(_tex_metric(m) for d in datasets for m in table_metrics) + " \\\\",
    ]

    def row(model_label: str, label: str, fn) -> str:
        values = [fn(cell.get((d, model, m))) for d in datasets for m in table_metrics]
        return f"{model_label} & {label} & " + " & ".join(values) + " \\\\"

    def ours(r):
        if r is None:
            return "--"
        text = _tex_value(r["mean"])
        if r["std"] is not None and not math.isnan(r["std"]):
            text += f" $\\pm$ {_tex_value(r['std'])}"
        return text

    def get(col, fmt):
        return lambda r: "--" if r is None else fmt(r[col])

    for model in models:
        ns = sorted({r["n_seeds"] for (d, m, _), r in cell.items() if m == model})
        n_label = f"$n{{=}}{ns[0]}$" if len(ns) == 1 else f"$n{{=}}{ns[0]}$--${ns[-1]}$"
        lines.append("\\midrule")
        lines.append(row(latex_escape(model), f"Ours ({n_label})", ours))
        lines.append(row("", "Paper", get("paper", _tex_value)))
        lines.append(row("", "$\\Delta$ vs paper", get("rel_diff_paper", _tex_rel)))
        if with_authors:
            lines.append(row("", "Authors' code (2-core CPU)", get("authors_code", _tex_value)))
            lines.append(row("", "$\\Delta$ vs authors' code", get("rel_diff_authors_code", _tex_rel)))
    lines += ["\\bottomrule", "\\end{tabular}"]
    return "\n".join(lines) + "\n"
