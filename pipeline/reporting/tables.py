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
  :func:`summarize`), with the significance test against the setting's reference model where
  one was run (see :mod:`pipeline.reporting.significance`).

Each table is rendered as Markdown (``.md``), CSV (``.csv``, full precision), LaTeX (``.tex``)
and a standalone HTML page (``.html``, what the Snakemake report shows).
"""

from __future__ import annotations

import html
import json
import math
import re
from typing import Sequence

import polars as pl

from pipeline.reporting import significance as sig

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
    "tested_against", "p_value", "mark",
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


def md_stars(text: str) -> str:
    """Significance marks in Markdown: ``**`` escaped, so it is not read as bold."""
    return text.replace("*", "\\*")


def fmt_p(p: float | None) -> str:
    """A p-value: three decimals from 0.001 up (``0.017``), else two significant digits (``5.3e-07``)."""
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return DASH
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


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
    significance: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """Test-split mean, sample std and n over seeds, next to the reference numbers.

    One row per (setting, dataset, model, metric) that we ran, for ``table_metrics``;
    ``rel_diff_*`` = mean / reference - 1 (null where the reference is absent or zero).
    ``tested_against``, ``p_value``, ``mark``: the row's paired test against the setting's
    reference model (a frame of :func:`pipeline.reporting.significance.significance`); null
    where the cell was not tested (the reference model itself, metrics not tested).
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
    if significance is None:
        significance = pl.DataFrame(schema=sig.SCHEMA)
    tests = significance.select(
        "setting", "dataset", "model", "metric", pl.col("reference").alias("tested_against"), "p_value", "mark"
    )
    summary = summary.join(tests, on=key, how="left")
    models = list(model_order) + sorted(set(summary["model"].to_list()) - set(model_order))
    return (
        summary.with_columns(_rank("model", models).alias("_m"), _rank("metric", table_metrics).alias("_k"))
        .sort("setting", "dataset", "_m", "_k", "metric")
        .select(SUMMARY_COLUMNS)
        .with_columns(pl.col(c).cast(pl.Float64) for c in SUMMARY_COLUMNS[5:11])
        .with_columns(pl.col("p_value").cast(pl.Float64))
    )


# --------------------------------------------------------------------------------------------
# The headline table (README)

HEADLINE_METRICS: tuple[str, ...] = ("recall@20", "ndcg@20")


def headline_markdown(summary: pl.DataFrame, settings: Sequence[str], model_order: Sequence[str],
                      reference_model: str, metrics: Sequence[str] = HEADLINE_METRICS) -> str:
    """Models x (setting x ``metrics``): the test mean over seeds with its significance mark
    against ``reference_model``, the best mean of each column in bold; "–" where a model did not
    run. Written to ``results/tables/headline.md``; the README's results block is this file."""
    columns = [(setting, metric) for setting in settings for metric in metrics]
    cell = {(r["setting"], r["model"], r["metric"]): r for r in summary.iter_rows(named=True)
            if r["metric"] in metrics and r["setting"] in settings}
    models = [m for m in model_order if any((s, m, k) in cell for s, k in columns)]
    best = {col: max((cell[(col[0], m, col[1])]["mean"] for m in models if (col[0], m, col[1]) in cell), default=None)
            for col in columns}
    header = ["model", *(f"{setting} {short_metric_label(metric)}" for setting, metric in columns)]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * len(columns)]
    for model in models:
        row = [model]
        for col in columns:
            r = cell.get((col[0], model, col[1]))
            if r is None:
                row.append(DASH)
                continue
            text = fmt_value(r["mean"])
            if r["mean"] == best[col]:
                text = f"**{text}**"
            row.append(text + md_stars(r["mark"] or ""))
        lines.append("| " + " | ".join(row) + " |")
    n_seeds = sorted(set(summary.filter(pl.col("model").is_in(models))["n_seeds"].to_list()))
    lines += [
        "",
        f"Test split, mean over {_join(n_seeds)} seeds; bold: best of the column; "
        f"{md_stars(sig.legend_levels())}: "
        f"different from {reference_model} (paired Wilcoxon over users). Written by `{GENERATED_BY}`.",
    ]
    return "\n".join(lines) + "\n"


def short_metric_label(metric: str) -> str:
    """``recall@20`` -> ``R@20`` (the headline's column names)."""
    name, _, k = metric.partition("@")
    short = {"recall": "R", "ndcg": "N", "precision": "P", "mrr": "MRR"}.get(name, name)
    return f"{short}@{k}"


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


def metrics_json(summary: pl.DataFrame) -> str:
    """results/metrics.json, the DVC metrics file of the aggregate stage (``dvc metrics show``
    / ``diff``): setting -> dataset -> model -> metric -> mean, std, n_seeds and, where the
    cell was tested against the reference model, p_value. Absent numbers are left out."""
    tree: dict = {}
    for r in summary.iter_rows(named=True):
        cell = {"mean": r["mean"], "n_seeds": r["n_seeds"]}
        if r["std"] is not None and not math.isnan(r["std"]):
            cell["std"] = r["std"]
        if r["p_value"] is not None and not math.isnan(r["p_value"]):
            cell["p_value"] = r["p_value"]
        tree.setdefault(r["setting"], {}).setdefault(r["dataset"], {}).setdefault(r["model"], {})[r["metric"]] = cell
    return json.dumps(tree, indent=2) + "\n"


# --------------------------------------------------------------------------------------------
# Markdown and HTML (both rendered from one description of the table page)


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


def significance_legend(
    significance: pl.DataFrame | None, setting: str, dataset: str, reference_model: str, models: Sequence[str]
) -> str:
    """The text under a dataset's table explaining its marks (Markdown inline syntax)."""
    tests = (significance if significance is not None else pl.DataFrame(schema=sig.SCHEMA)).filter(
        pl.col("setting") == setting, pl.col("dataset") == dataset
    )
    if tests.height == 0:
        if reference_model not in models:
            why = f"there are no {reference_model} runs on {dataset} {setting} to test against"
        else:
            why = f"{reference_model} (the reference) is the only model of this table"
        return f"No significance marks: {why}."
    users = sorted(set(tests["n_users"].to_list()))
    seeds = sorted(set(tests["seeds"].to_list()))
    tested = list(dict.fromkeys(tests["metric"].to_list()))
    seeds_text = (
        f"seeds {', '.join(seeds[0].split())}" if len(seeds) == 1 else "see `results/significance.csv` for each pair's seeds"
    )
    levels = md_stars(sig.legend_levels())
    return (
        f"**Marks** after *Ours*: {levels} in a two-sided Wilcoxon signed-rank test of the row's model "
        f"against {reference_model} on the same {'/'.join(str(u) for u in users)} test users "
        f"({' and '.join(tested)}; each user's values averaged over the seeds both models ran, {seeds_text}); "
        f"no mark: p ≥ {sig.MARKS[-1][0]:g}. A mark says the model differs from {reference_model}; the means say "
        f"in which direction. {reference_model}'s own rows and the other metrics are not tested; no correction "
        "for multiple comparisons. p-values: `results/significance.csv`."
    )


def _page(
    summary: pl.DataFrame,
    reference: pl.DataFrame,
    runs: pl.DataFrame,
    setting: str,
    select_metric: str,
    significance: pl.DataFrame | None,
    reference_model: str,
) -> dict:
    """Everything a setting's table page shows; text in Markdown inline syntax."""
    prov = _provenance(runs, setting, select_metric)
    rows = summary.filter(pl.col("setting") == setting)
    used = _reference_used(summary, reference, setting)
    intro = [
        f"Generated by `{GENERATED_BY}` from the runs of split(s) {prov['splits']}, "
        f"model(s) {prov['models']}, seed(s) {prov['seeds']} ({prov['n_runs']}); do not edit by hand.",
        f"**Ours**: test-split metrics at the epoch with the best validation {prov['select']}, "
        "mean ± sample standard deviation over seeds (n = number of seeds). "
        "**Δ** = ours / reference − 1.",
    ]
    for kind in ("paper", "authors_code"):
        sources = sorted(set(used.filter(pl.col("kind") == kind)["source"].to_list()))
        if sources:
            intro.append(f"**{KIND_LABELS[kind]}**: " + "; ".join(s.rstrip(".") for s in sources) + ".")

    columns = ["Model", "Metric", "Ours (mean ± std, n)", f"p vs {reference_model}", "Paper", "Δ vs paper",
               KIND_LABELS["authors_code"], "Δ vs authors' code"]
    datasets = []
    for dataset in sorted(set(rows["dataset"].to_list())):
        body = []
        part = rows.filter(pl.col("dataset") == dataset)
        for r in part.iter_rows(named=True):
            body.append({
                "cells": [
                    r["model"],
                    r["metric"],
                    fmt_ours(r["mean"], r["std"], r["n_seeds"]),
                    fmt_p(r["p_value"]),
                    fmt_value(r["paper"]),
                    fmt_rel(r["rel_diff_paper"]),
                    fmt_value(r["authors_code"]),
                    fmt_rel(r["rel_diff_authors_code"]),
                ],
                "mark": r["mark"] or "",
            })
        legend = significance_legend(significance, setting, dataset, reference_model, part["model"].to_list())
        datasets.append({"name": dataset, "rows": body, "legend": legend})

    notes = (
        used.filter(pl.col("note") != "")
        .select("kind", "dataset", "model", "note")
        .unique()
        .with_columns(_rank("kind", ["paper", "authors_code"]).alias("_k"))
        .sort("_k", "dataset", "model", "note")
    )
    return {
        "title": f"Results: {setting} setting",
        "intro": intro,
        "columns": columns,
        "align": ["left", "left", "right", "right", "right", "right", "right", "right"],
        "datasets": datasets,
        "notes": [f"{KIND_LABELS[r['kind']]}, {r['dataset']} {r['model']}: {r['note']}" for r in notes.iter_rows(named=True)],
    }


def setting_markdown(
    summary: pl.DataFrame,
    reference: pl.DataFrame,
    runs: pl.DataFrame,
    setting: str,
    select_metric: str,
    significance: pl.DataFrame | None = None,
    reference_model: str = "DiffRec",
) -> str:
    """results/tables/<setting>.md: a header, then one table per dataset (rows: model x metric),
    each followed by the legend of its significance marks."""
    page = _page(summary, reference, runs, setting, select_metric, significance, reference_model)
    lines = [f"# {page['title']}"]
    for paragraph in page["intro"]:
        lines += ["", paragraph]
    align = ["---" if a == "left" else "---:" for a in page["align"]]
    for ds in page["datasets"]:
        lines += ["", f"## {ds['name']}", "", "| " + " | ".join(page["columns"]) + " |", "|" + "|".join(align) + "|"]
        for row in ds["rows"]:
            cells = list(row["cells"])
            if row["mark"]:
                cells[2] += " " + md_stars(row["mark"])
            lines.append("| " + " | ".join(cells) + " |")
        lines += ["", ds["legend"]]
    if page["notes"]:
        lines += ["", "Notes on the reference numbers:", ""]
        lines += [f"- {note}" for note in page["notes"]]
    return "\n".join(lines) + "\n"


def md_inline_to_html(text: str) -> str:
    """The Markdown inline syntax these pages use (``**bold**``, ``*em*``, ```code```, ``\\*``) as HTML."""
    out = html.escape(text, quote=False).replace("\\*", "\x00")
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    out = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", out)
    out = re.sub(r"\*(.+?)\*", r"<em>\1</em>", out)
    return out.replace("\x00", "*")


_HTML_STYLE = """\
body { font-family: "DejaVu Sans", Arial, sans-serif; font-size: 14px; margin: 1.5em; color: #222; max-width: 75em; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.5em; }
table { border-collapse: collapse; margin: 0.5em 0; }
th, td { border: 1px solid #bbb; padding: 0.25em 0.6em; }
th { background: #eee; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.mark { font-weight: bold; color: #b00; }
p.legend { font-size: 0.9em; color: #333; }
code { background: #f3f3f3; padding: 0 0.2em; }"""


def setting_html(
    summary: pl.DataFrame,
    reference: pl.DataFrame,
    runs: pl.DataFrame,
    setting: str,
    select_metric: str,
    significance: pl.DataFrame | None = None,
    reference_model: str = "DiffRec",
) -> str:
    """results/tables/<setting>.html: the Markdown page as a standalone HTML page (no scripts,
    no external resources), the form the Snakemake report embeds."""
    page = _page(summary, reference, runs, setting, select_metric, significance, reference_model)
    esc = html.escape
    lines = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f"<title>{esc(page['title'])}</title>",
        f"<style>\n{_HTML_STYLE}\n</style>",
        "</head>",
        "<body>",
        f"<h1>{esc(page['title'])}</h1>",
    ]
    lines += [f"<p>{md_inline_to_html(p)}</p>" for p in page["intro"]]
    for ds in page["datasets"]:
        lines += [f"<h2>{esc(ds['name'])}</h2>", "<table>", "<thead>", "<tr>"]
        lines += [f"<th>{esc(c)}</th>" for c in page["columns"]]
        lines += ["</tr>", "</thead>", "<tbody>"]
        for row in ds["rows"]:
            tds = []
            for i, (cell, align) in enumerate(zip(row["cells"], page["align"])):
                text = esc(cell)
                if i == 2 and row["mark"]:
                    text += f' <span class="mark">{esc(row["mark"])}</span>'
                tds.append(f'<td class="num">{text}</td>' if align == "right" else f"<td>{text}</td>")
            lines.append("<tr>" + "".join(tds) + "</tr>")
        lines += ["</tbody>", "</table>", f'<p class="legend">{md_inline_to_html(ds["legend"])}</p>']
    if page["notes"]:
        lines += ["<p>Notes on the reference numbers:</p>", "<ul>"]
        lines += [f"<li>{esc(note)}</li>" for note in page["notes"]]
        lines.append("</ul>")
    lines += ["</body>", "</html>"]
    return "\n".join(lines) + "\n"


def _fmt_statistic(x: float | None) -> str:
    if x is None or math.isnan(x):
        return DASH
    return f"{x:.1f}" if x != int(x) else f"{int(x)}"


def significance_html(significance: pl.DataFrame, reference_model: str = "DiffRec") -> str:
    """results/significance.html: every row of significance.csv as a readable table per setting
    (the form the Snakemake report shows; the CSV has the full-precision numbers)."""
    esc = html.escape
    title = f"Paired significance tests against {reference_model}"
    columns = ["Dataset", "Model", "Metric", "Seeds", "Users", "Users with a difference", "Mean",
               f"Mean {reference_model}", f"Difference (model − {reference_model})", "Wilcoxon W", "p", "Mark"]
    intro = (
        f"Generated by `{GENERATED_BY}` from the runs' per-user test values; do not edit by hand. "
        f"Each row: a two-sided Wilcoxon signed-rank test (`scipy.stats.wilcoxon`, defaults: users with equal "
        f"values dropped, normal approximation above 50 users) of the model against {reference_model} on the same "
        "dataset and setting, paired over the test users, each user's values averaged over the seeds both models "
        f"ran. **Mark**: {md_stars(sig.legend_levels())}; none for p ≥ {sig.MARKS[-1][0]:g}. The sign "
        "of the difference is the direction. No correction for multiple comparisons. "
        "Full precision: `results/significance.csv`."
    )
    lines = [
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">', f"<title>{esc(title)}</title>",
        f"<style>\n{_HTML_STYLE}\n</style>", "</head>", "<body>", f"<h1>{esc(title)}</h1>",
        f"<p>{md_inline_to_html(intro)}</p>",
    ]
    if significance.height == 0:
        lines.append(f"<p>No tests: no setting has both {esc(reference_model)} and another model.</p>")
    for setting in dict.fromkeys(significance["setting"].to_list()):
        lines += [f"<h2>{esc(setting)}</h2>", "<table>", "<thead>", "<tr>"]
        lines += [f"<th>{esc(c)}</th>" for c in columns]
        lines += ["</tr>", "</thead>", "<tbody>"]
        for r in significance.filter(pl.col("setting") == setting).iter_rows(named=True):
            text = [r["dataset"], r["model"], r["metric"], r["seeds"].replace(" ", ", ")]
            nums = [str(r["n_users"]), str(r["n_nonzero"]), fmt_value(r["mean"]), fmt_value(r["mean_reference"]),
                    f"{r['mean_diff']:+.4f}", _fmt_statistic(r["statistic"]), fmt_p(r["p_value"])]
            mark = f'<span class="mark">{esc(r["mark"])}</span>' if r["mark"] else ""
            lines.append(
                "<tr>" + "".join(f"<td>{esc(t)}</td>" for t in text)
                + "".join(f'<td class="num">{esc(n)}</td>' for n in nums) + f"<td>{mark}</td></tr>"
            )
        lines += ["</tbody>", "</table>"]
    lines += ["</body>", "</html>"]
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

    Columns: dataset x metric; rows: per model, ours (mean ± std, with the significance mark
    as a superscript), the paper's value and Δ, and, where any exist for the setting, the
    authors' code values and Δ; under the rule, the legend of the marks.
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
        if r["mark"]:
            text += f"$^{{{r['mark']}}}$"
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
    lines.append("\\bottomrule")
    tested = rows.filter(pl.col("tested_against").is_not_null())
    if tested.height:
        against = latex_escape(_join(sorted(set(tested["tested_against"].to_list()))))
        metrics = ", ".join(_tex_metric(m) for m in dict.fromkeys(tested["metric"].to_list()))
        levels = ", ".join(f"$^{{{text}}}$\\,$p<{level:g}$" for level, text in sig.MARKS)
        lines.append(
            f"\\multicolumn{{{2 + k * len(datasets)}}}{{l}}{{\\footnotesize {levels}: two-sided Wilcoxon signed-rank "
            f"test vs {against} over users ({metrics}; results/significance.csv).}} \\\\"
        )
    lines.append("\\end{tabular}")
    return "\n".join(lines) + "\n"
