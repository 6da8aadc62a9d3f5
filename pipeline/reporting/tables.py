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

A table is first described once, as a :class:`Table` (a polars frame of cell texts with their
emphasis and significance marks, headers, row groups, notes), then rendered by maintained
libraries: Markdown by polars' own table formatter, HTML and LaTeX by great_tables. CSV
(``.csv``, full precision) is written from the summary frame itself.
"""

from __future__ import annotations

import html
import json
import math
import re
from dataclasses import dataclass, field
from typing import Collection, Sequence

import polars as pl

from pipeline.reporting import significance as sig

# The paper's metrics, in the paper's column order.
TABLE_METRICS: tuple[str, ...] = ("recall@10", "recall@20", "ndcg@10", "ndcg@20")
# Settings whose reference numbers are comparable with our splits, in the tables' order: DiffRec's
# ML-1M settings, then TV-Diff's own splits under our protocol (carved) and the authors' (authors).
SETTINGS: tuple[str, ...] = ("clean", "noisy", "temporal", "carved", "authors")
# The README's headline table: DiffRec's ML-1M settings.
HEADLINE_SETTINGS: tuple[str, ...] = ("clean", "noisy", "temporal")
# What a setting's table says it shows (default: "<setting> setting").
SETTING_TITLES = {
    "carved": "TV-Diff's datasets, our protocol (validation carved from train, validation-selected)",
    "authors": "TV-Diff's datasets, test-selected (authors' protocol)",
}
# Settings whose validation part is their test part: the best epoch is the best test epoch.
TEST_SELECTED = ("authors",)
# Reference sources are recognised by the start of their `source` field.
PAPER_PREFIX = "DiffRec (SIGIR 2023)"
# Papers that report on their own splits (reference setting "own-split"): the setting of ours
# that reproduces that protocol on the same files. TV-Diff: its random 80/20 splits, the best test
# epoch kept = our `authors` setting.
OWN_SPLIT = "own-split"
OWN_SPLIT_PAPERS = {"TV-Diff (KDD 2026)": "authors"}
AUTHORS_CODE_PREFIX = "official DiffRec code"
KIND_LABELS = {"paper": "Paper", "authors_code": "Authors' code (2-core CPU)"}

DASH = "–"  # shown where a number is absent
GENERATED_BY = "python -m pipeline aggregate"

METRICS_COLUMNS = ("dataset", "setting", "model", "seed", "split", "metric", "value")
RUNS_COLUMNS = ("dataset", "setting", "model", "seed", "best_epoch", "epochs_trained", "n_parameters")
SUMMARY_COLUMNS = (
    "setting", "dataset", "model", "metric", "n_seeds", "n_distinct", "mean", "std",
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
    ``authors_code``). A paper of :data:`OWN_SPLIT_PAPERS` is a paper too; its ``own-split`` rows
    take the setting of ours that reproduces its protocol. Other sources, and settings outside
    :data:`SETTINGS`, are not comparable and are dropped. Two rows for one cell are an error.
    """
    missing = sorted(set(REFERENCE_COLUMNS) - {"kind"} - set(raw.columns))
    if missing:
        raise ValueError(f"paper results: missing columns {missing}; expected {list(REFERENCE_COLUMNS[1:])}")
    source = pl.col("source").fill_null("")
    own_split = pl.lit(None, dtype=pl.String)
    for prefix, setting in OWN_SPLIT_PAPERS.items():
        own_split = pl.when(source.str.starts_with(prefix)).then(pl.lit(setting)).otherwise(own_split)
    table = (
        raw.with_columns(
            pl.when(source.str.starts_with(PAPER_PREFIX) | own_split.is_not_null())
            .then(pl.lit("paper"))
            .when(source.str.starts_with(AUTHORS_CODE_PREFIX))
            .then(pl.lit("authors_code"))
            .otherwise(pl.lit(None, dtype=pl.String))
            .alias("kind"),
            pl.when(pl.col("setting") == OWN_SPLIT).then(own_split).otherwise(pl.col("setting")).alias("setting"),
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
    paper_names: dict[str, str | None] | None = None,
    significance: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """Test-split mean, sample std and n over seeds, next to the reference numbers.

    One row per (setting, dataset, model, metric) that we ran, for ``table_metrics``;
    ``rel_diff_*`` = mean / reference - 1 (null where the reference is absent or zero).
    ``n_distinct``: how many different values the seeds gave (1 for a deterministic model).
    ``tested_against``, ``p_value``, ``mark``: the row's paired test against the setting's
    reference model (a frame of :func:`pipeline.reporting.significance.significance`); null
    where the cell was not tested (the reference model itself, metrics not tested).
    Sorted by setting, dataset, model (``model_order`` first, then alphabetically) and metric
    (``table_metrics`` order). ``paper_names`` maps a row name to the model name the reference
    uses (e.g. "L-DiffRec (released emb.)" -> "L-DiffRec"; None: a configuration no reference ran,
    left without reference numbers); by default they are the same.
    """
    key = ["setting", "dataset", "model", "metric"]
    ours = (
        metrics.filter(pl.col("split") == "test", pl.col("metric").is_in(list(table_metrics)))
        .sort([*key, "seed"])
        .group_by(key, maintain_order=True)
        .agg(
            pl.len().cast(pl.Int64).alias("n_seeds"),
            pl.col("value").n_unique().cast(pl.Int64).alias("n_distinct"),
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
        .with_columns(pl.col(c).cast(pl.Float64) for c in SUMMARY_COLUMNS[6:12])
        .with_columns(pl.col("p_value").cast(pl.Float64))
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
# One description per table, three renderings


# Row groups of the setting tables, in this order (a model class's ``family``).
FAMILIES: tuple[str, ...] = ("classic", "generative", "diffusion")
BEST, SECOND = "best", "second"


@dataclass(frozen=True)
class Table:
    """What a table shows, whatever the output syntax.

    ``frame`` holds, per row, ``_group`` (row group; ignored when ``group`` is None), ``_stub``
    (the row's name) and one text column per entry of ``columns``; a cell column ``c`` may have
    ``c + EMPHASIS`` (:data:`BEST`, :data:`SECOND` or "") and ``c + MARK`` (significance marks,
    appended to the cell). ``labels``: column -> header. ``spanners``: (header, columns) above a
    run of columns. ``notes``: paragraphs in Markdown inline syntax, under the table. ``right``:
    columns aligned right.
    """

    id: str
    title: str
    frame: pl.DataFrame
    columns: tuple[str, ...]
    labels: dict[str, str]
    stub: str = "Model"
    group: str | None = None
    spanners: tuple[tuple[str, tuple[str, ...]], ...] = ()
    notes: tuple[str, ...] = ()
    right: tuple[str, ...] = field(default=())


EMPHASIS, MARK = "__emphasis", "__mark"


def _cells(table: Table, column: str) -> list[tuple[str, str, str]]:
    """(text, emphasis, mark) of every cell of a column."""
    frame = table.frame
    n = frame.height
    emphasis = frame[column + EMPHASIS].to_list() if column + EMPHASIS in frame.columns else [""] * n
    marks = frame[column + MARK].to_list() if column + MARK in frame.columns else [""] * n
    return list(zip(frame[column].to_list(), emphasis, marks))


def _markdown_header(table: Table, column: str) -> str:
    label = table.labels[column]
    if len(table.spanners) > 1:
        for spanner, members in table.spanners:
            if column in members:
                return f"{spanner} {label}"
    return label


def _markdown_cell(text: str, emphasis: str, mark: str) -> str:
    if emphasis == BEST:
        text = f"**{text}**"
    elif emphasis == SECOND:
        text = f"<ins>{text}</ins>"
    return text + md_stars(mark)


def to_markdown(table: Table, title: bool = True) -> str:
    """The table as GitHub Markdown (polars' Markdown table formatter), its notes under it; with
    ``title``, a ``#`` heading above."""
    data: dict[str, list[str]] = {}
    if table.group is not None:
        groups = table.frame["_group"].to_list()
        data[table.group] = [g if i == 0 or groups[i - 1] != g else "" for i, g in enumerate(groups)]
    data[table.stub] = table.frame["_stub"].to_list()
    for column in table.columns:
        header = _markdown_header(table, column)
        if header in data:
            raise ValueError(f"table {table.id}: two columns named {header!r}")
        data[header] = [_markdown_cell(*cell) for cell in _cells(table, column)]
    with pl.Config(
        tbl_formatting="MARKDOWN", tbl_hide_column_data_types=True, tbl_hide_dataframe_shape=True,
        tbl_rows=-1, tbl_cols=-1, fmt_str_lengths=10_000, tbl_width_chars=65_000, tbl_cell_alignment="LEFT",
    ):
        body = str(pl.DataFrame(data, schema={name: pl.String for name in data}))
    parts = ([f"# {table.title}"] if title else []) + [body, *table.notes]
    return "\n\n".join(parts) + "\n"


def _latex_text(text: str) -> str:
    return text.replace("±", r"$\pm$").replace(DASH, "--").replace("−", "$-$")


def _cell_formats(emphasis: str):
    """great_tables per-output formatting of a cell whose text ends in its significance marks."""
    from great_tables._gt_data import FormatFns  # great_tables' per-output formatter (GT.fmt)

    def split(x: str) -> tuple[str, str]:
        body, stars = re.fullmatch(r"(.*?)(\**)", x, flags=re.S).groups()
        return body, stars

    def as_html(x: str) -> str:
        body, stars = split(x)
        body = html.escape(body)
        body = {BEST: f"<strong>{body}</strong>", SECOND: f"<u>{body}</u>"}.get(emphasis, body)
        return body + (f"<sup>{stars}</sup>" if stars else "")

    def as_latex(x: str) -> str:
        body, stars = split(x)
        body = _latex_text(body)
        body = {BEST: f"\\textbf{{{body}}}", SECOND: f"\\underline{{{body}}}"}.get(emphasis, body)
        return body + (f"$^{{{stars}}}$" if stars else "")

    return FormatFns(html=as_html, latex=as_latex, default=as_html)


def to_gt(table: Table):
    """The table as a great_tables ``GT`` (HTML and LaTeX come from it)."""
    from great_tables import GT, md

    frame = {"_stub": table.frame["_stub"]}
    if table.group is not None:
        frame["_group"] = table.frame["_group"]
    for column in table.columns:
        frame[column] = [text + mark for text, _, mark in _cells(table, column)]
    for column in table.columns:
        if column + EMPHASIS in table.frame.columns:
            frame[column + EMPHASIS] = table.frame[column + EMPHASIS]
    data = pl.DataFrame(frame)
    gt = GT(data, rowname_col="_stub", groupname_col="_group" if table.group is not None else None, id=table.id)
    gt = gt.tab_header(title=table.title).tab_stubhead(label=table.stub)
    for column in table.columns:
        gt = gt.fmt(_cell_formats(""), columns=column)
        if column + EMPHASIS in data.columns:
            for emphasis in (BEST, SECOND):
                gt = gt.fmt(_cell_formats(emphasis), columns=column, rows=pl.col(column + EMPHASIS) == emphasis)
    hidden = [c for c in data.columns if c.endswith(EMPHASIS)]
    if hidden:
        gt = gt.cols_hide(hidden)
    for label, members in table.spanners:
        gt = gt.tab_spanner(label=label, columns=list(members), id=f"{table.id}-{label}")
    gt = gt.cols_label(**{c: table.labels[c] for c in table.columns})
    if table.right:
        gt = gt.cols_align("right", columns=list(table.right))
    for note in table.notes:
        gt = gt.tab_source_note(md(note))
    return gt.opt_css(f"#{table.id} sup {{ line-height: 0; }}")  # marks do not lower their row's baseline


def to_html(table: Table) -> str:
    """A standalone HTML page (great_tables; no scripts), the form the Snakemake report embeds."""
    page = to_gt(table).as_raw_html(make_page=True)
    return page if page.endswith("\n") else page + "\n"


def to_latex(table: Table) -> str:
    """A LaTeX ``table`` (great_tables; needs booktabs)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a feature great_tables cannot put in LaTeX must not vanish silently
        text = to_gt(table).as_latex()
    return f"% Generated by `{GENERATED_BY}`; do not edit by hand. Requires \\usepackage{{booktabs}}.\n{text.rstrip()}\n"


# --------------------------------------------------------------------------------------------
# The tables


def _join(values) -> str:
    return ", ".join(str(v) for v in values)


def _provenance(runs: pl.DataFrame, settings: Sequence[str]) -> str:
    sel = runs.filter(pl.col("setting").is_in(list(settings)))
    return (
        f"Generated by `{GENERATED_BY}` from {sel.height} run{'' if sel.height == 1 else 's'} "
        f"(split(s) {_join(sorted(set(sel['split_name'].to_list())))}; seed(s) "
        f"{_join(sorted(set(sel['seed'].to_list())))}); do not edit by hand."
    )


def _ranked(values: dict[str, float]) -> dict[str, str]:
    """:data:`BEST` / :data:`SECOND` for the highest and second-highest distinct values (ties share)."""
    distinct = sorted(set(values.values()), reverse=True)
    top = {v: BEST for v in distinct[:1]} | {v: SECOND for v in distinct[1:2]}
    return {key: top.get(v, "") for key, v in values.items()}


def _metric_column(data: dict[str, list], col: str, models: Sequence[str], rows: dict[str, dict], text) -> None:
    """Add metric column ``col`` to a table frame: ``text(model, summary row)`` per model that has a
    row in ``rows`` (DASH for the others), the best and second mean emphasised, the rows' marks."""
    emphasis = _ranked({m: r["mean"] for m, r in rows.items()})
    data[col] = [text(m, rows[m]) if m in rows else DASH for m in models]
    data[col + EMPHASIS] = [emphasis.get(m, "") for m in models]
    data[col + MARK] = [(rows[m]["mark"] or "") if m in rows else "" for m in models]


def by_family(models: Sequence[str], families: dict[str, str]) -> list[str]:
    """``models`` grouped by family in :data:`FAMILIES` order (unknown last), keeping their order
    within a family."""
    rank = {f: i for i, f in enumerate(FAMILIES)}
    return sorted(models, key=lambda m: rank.get(families.get(m, ""), len(FAMILIES)))


def _seeds_text(rows: Sequence[dict], deterministic: bool) -> str:
    """The n column of a model's cells (summary rows): "–" without any, "1" for a deterministic
    model, else the distinct seed counts joined by "/"."""
    if not rows:
        return DASH
    return "1" if deterministic else "/".join(str(n) for n in sorted({r["n_seeds"] for r in rows}))


def _mean_std(r: dict, deterministic: bool) -> str:
    if deterministic or r["std"] is None or math.isnan(r["std"]):
        return fmt_value(r["mean"])
    return f"{fmt_value(r['mean'])} ± {fmt_value(r['std'])}"


def significance_legend(
    significance: pl.DataFrame | None, setting: str, dataset: str, reference_model: str, models: Sequence[str]
) -> str:
    """The sentence under a table explaining its marks (Markdown inline syntax)."""
    tests = (significance if significance is not None else pl.DataFrame(schema=sig.SCHEMA)).filter(
        pl.col("setting") == setting, pl.col("dataset") == dataset
    )
    if tests.height == 0:
        if reference_model not in models:
            why = f"there are no {reference_model} runs on {dataset} {setting} to test against"
        else:
            why = f"{reference_model} (the reference) is the only model of this table"
        return f"No significance marks: {why}."
    users = "/".join(str(u) for u in sorted(set(tests["n_users"].to_list())))
    tested = " and ".join(short_metric_label(m) for m in dict.fromkeys(tests["metric"].to_list()))
    return (
        f"{md_stars(sig.legend_levels())}: two-sided Wilcoxon signed-rank test against {reference_model} over the "
        f"same {users} test users ({tested} only; each user's values averaged over the seeds both models ran); "
        "the means give the direction; no correction for multiple comparisons; p-values in `results/significance.csv`."
    )


def setting_title(setting: str) -> str:
    return SETTING_TITLES.get(setting, f"{setting} setting")


def selection_note(setting: str, select_metric: str) -> str:
    """Which epoch a setting's numbers come from."""
    if setting in TEST_SELECTED:
        return (f"Test split at the epoch with the best test {select_metric} (test-selected, the authors' protocol: "
                "their split has no validation part)")
    return f"Test split at the epoch with the best validation {select_metric}"


def setting_table(
    summary: pl.DataFrame,
    runs: pl.DataFrame,
    setting: str,
    select_metric: str,
    families: dict[str, str],
    significance: pl.DataFrame | None = None,
    reference_model: str = "DiffRec",
    table_metrics: Sequence[str] = TABLE_METRICS,
    deterministic: Collection[str] = (),
) -> Table:
    """The paper-style table of a setting: models (grouped by family) x dataset x metrics, each
    cell the test mean ± std over seeds, the column's best bold and second underlined, marked
    where it differs from ``reference_model``. ``families``: model -> one of :data:`FAMILIES`.
    A ``deterministic`` model shows one run (an error if its seeds gave different values)."""
    rows = summary.filter(pl.col("setting") == setting)
    datasets = sorted(set(rows["dataset"].to_list()))
    cell = {(r["dataset"], r["model"], r["metric"]): r for r in rows.iter_rows(named=True)}
    models = by_family(list(dict.fromkeys(rows["model"].to_list())), families)  # summary order within a family
    differing = sorted({(m, d) for (d, m, _), r in cell.items() if m in deterministic and r["n_distinct"] > 1})
    if differing:
        m, d = differing[0]
        raise ValueError(f"{m} is deterministic, but its runs on {d} {setting} gave different values for different seeds")
    deterministic = {(d, m): m in deterministic for d in datasets for m in models}
    data: dict[str, list] = {"_group": [families.get(m, "other") for m in models], "_stub": models}
    columns, labels, spanners, right = [], {}, [], []
    for d in datasets:
        members = []
        n_col = f"{d}:n"
        data[n_col] = [
            _seeds_text([cell[d, m, k] for k in table_metrics if (d, m, k) in cell], deterministic[d, m]) for m in models
        ]
        labels[n_col] = "n"
        members.append(n_col)
        for k in table_metrics:
            col = f"{d}:{k}"
            rows_k = {m: cell[d, m, k] for m in models if (d, m, k) in cell}
            _metric_column(data, col, models, rows_k, lambda m, r, d=d: _mean_std(r, deterministic[d, m]))
            labels[col] = short_metric_label(k)
            members.append(col)
        columns += members
        right += members
        spanners.append((d, tuple(members)))

    notes = [
        f"{selection_note(setting, select_metric)}: mean ± sample standard deviation over "
        "n seeds. **Bold**: best of the column; <ins>underlined</ins>: second best.",
    ]
    for d in datasets:
        legend = significance_legend(significance, setting, d, reference_model, models)
        notes.append(legend if len(datasets) == 1 else f"{d}: {legend}")
    for d in datasets:
        for m in models:
            if deterministic[d, m] and any((d, m, k) in cell for k in table_metrics):
                seeds = sorted(runs.filter(pl.col("setting") == setting, pl.col("dataset") == d,
                                           pl.col("model") == m)["seed"].to_list())
                notes.append(f"{m} is deterministic: one run (seed {seeds[0]})." if len(seeds) == 1 else
                             f"{m} is deterministic: its runs with seeds {_join(seeds)} gave identical values, "
                             "shown as one run (n = 1).")
    notes.append("Published numbers and the authors' code beside ours: `results/tables/reproduction.md`.")
    notes.append(_provenance(runs, [setting]))
    return Table(
        id=setting, title=f"Results: {setting_title(setting)}", frame=pl.DataFrame(data), columns=tuple(columns),
        labels=labels, stub="Model", group="Group", spanners=tuple(spanners), notes=tuple(notes), right=tuple(right),
    )


def reproduction_table(
    summary: pl.DataFrame,
    reference: pl.DataFrame,
    runs: pl.DataFrame,
    settings: Sequence[str],
    select_metric: str,
    table_metrics: Sequence[str] = TABLE_METRICS,
) -> Table:
    """Every model with a published (paper) or authors'-code number: ours, the reference and
    Δ = ours / reference − 1, per metric; one row per (setting, dataset, model, reference)."""
    key = ["setting", "dataset", "model", "metric"]
    cell = {tuple(r[k] for k in key): r for r in summary.iter_rows(named=True)}
    rows = summary.filter(pl.col("setting").is_in(list(settings)))
    data: dict[str, list] = {"_group": [], "_stub": [], "reference": []}
    for k in table_metrics:
        for part in ("ours", "ref", "delta"):
            data[f"{k}:{part}"] = []
    for setting in settings:
        part = rows.filter(pl.col("setting") == setting)
        for d in sorted(set(part["dataset"].to_list())):
            for m in dict.fromkeys(part.filter(pl.col("dataset") == d)["model"].to_list()):
                for kind, rel in (("paper", "rel_diff_paper"), ("authors_code", "rel_diff_authors_code")):
                    found = [cell.get((setting, d, m, k)) for k in table_metrics]
                    if not any(r is not None and r[kind] is not None for r in found):
                        continue
                    data["_group"].append(f"{setting} · {d}")
                    data["_stub"].append(m)
                    data["reference"].append(KIND_LABELS[kind])
                    for k, r in zip(table_metrics, found):
                        data[f"{k}:ours"].append(DASH if r is None else fmt_value(r["mean"]))
                        data[f"{k}:ref"].append(DASH if r is None else fmt_value(r[kind]))
                        data[f"{k}:delta"].append(DASH if r is None else fmt_rel(r[rel]))
    columns = ["reference", *(f"{k}:{p}" for k in table_metrics for p in ("ours", "ref", "delta"))]
    labels = {"reference": "Reference"} | {
        f"{k}:{p}": {"ours": "Ours", "ref": "Ref.", "delta": "Δ"}[p] for k in table_metrics for p in ("ours", "ref", "delta")
    }
    spanners = tuple((short_metric_label(k), (f"{k}:ours", f"{k}:ref", f"{k}:delta")) for k in table_metrics)

    used = reference.join(summary.select(key), on=key, how="semi")
    notes = [
        f"**Ours**: test split at the epoch with the best validation {select_metric}, mean over seeds "
        "(the setting tables give ± std and n). **Δ** = ours / reference − 1.",
    ]
    notes += [f"{s} rows: {selection_note(s, select_metric).lower()}." for s in settings if s in TEST_SELECTED]
    for kind in ("paper", "authors_code"):
        sources = sorted(set(used.filter(pl.col("kind") == kind)["source"].to_list()))
        if sources:
            notes.append(f"**{KIND_LABELS[kind]}**: " + "; ".join(s.rstrip(".") for s in sources) + ".")
    remarks = (
        used.filter(pl.col("note") != "").select("kind", "setting", "dataset", "model", "note").unique()
        .with_columns(_rank("kind", ["paper", "authors_code"]).alias("_k"), _rank("setting", list(settings)).alias("_s"))
        .sort("_k", "_s", "dataset", "model", "note")
        .group_by("_k", "kind", "_s", "setting", "dataset", "note", maintain_order=True).agg("model")
    )
    for r in remarks.iter_rows(named=True):
        notes.append(f"{KIND_LABELS[r['kind']]}, {r['setting']} {r['dataset']} {_join(r['model'])}: {r['note']}")
    other = reference.join(summary.select("setting", "dataset").unique(), on=["setting", "dataset"], how="anti")
    other = other.with_columns(_rank("setting", list(SETTINGS)).alias("_s"))
    if other.height:
        listed = (other.group_by("_s", "setting", "dataset").agg(pl.col("model").n_unique().alias("n"))
                  .sort("_s", "dataset").iter_rows(named=True))
        notes.append(
            "Reference numbers with no run of ours on their data (not compared): "
            + "; ".join(f"{r['setting']} {r['dataset']} ({r['n']} model{'' if r['n'] == 1 else 's'})" for r in listed) + "."
        )
    notes.append(_provenance(runs, settings))
    return Table(
        id="reproduction", title="Reproduction: ours beside the published numbers and the authors' code",
        frame=pl.DataFrame(data, schema={c: pl.String for c in data}), columns=tuple(columns), labels=labels,
        stub="Model", group="Setting", spanners=spanners, notes=tuple(notes), right=tuple(columns[1:]),
    )


HEADLINE_METRICS: tuple[str, ...] = ("recall@20", "ndcg@20")


# The own-split table's protocols: the authors' (beside the paper's numbers), then ours.
OWN_SPLIT_SETTINGS: tuple[str, str] = ("authors", "carved")


def has_own_split_table(settings: Collection[str]) -> bool:
    """Whether ``results/tables/tvdiff.*`` is written: both protocols ran."""
    return set(OWN_SPLIT_SETTINGS) <= set(settings)


def own_split_table(summary: pl.DataFrame, runs: pl.DataFrame, select_metric: str, families: dict[str, str],
                    deterministic: Collection[str] = (), settings: Sequence[str] = OWN_SPLIT_SETTINGS,
                    metrics: Sequence[str] = HEADLINE_METRICS, reference_model: str = "DiffRec") -> Table:
    """TV-Diff's datasets, both protocols side by side: per dataset (row group) and model, the test
    mean ± std under the authors' protocol (test-selected), the paper's number and Δ = ours / paper
    − 1 where the paper has one, and the mean ± std under our protocol (validation-selected).
    Bold / underlined: best / second of the column within a dataset; marks: paired Wilcoxon against
    ``reference_model`` under that protocol. ``results/tables/tvdiff.md``."""
    rows = summary.filter(pl.col("setting").is_in(list(settings)))
    cell = {(r["setting"], r["dataset"], r["model"], r["metric"]): r for r in rows.iter_rows(named=True)}
    datasets = sorted(set(rows["dataset"].to_list()))
    columns = [f"{s}:{k}" for s in settings[:1] for k in ("n", *metrics)] + [f"paper:{k}" for k in metrics] \
        + [f"delta:{k}" for k in metrics] + [f"{s}:{k}" for s in settings[1:] for k in ("n", *metrics)]
    data: dict[str, list] = {"_group": [], "_stub": []}
    for c in columns:
        data[c], data[c + EMPHASIS], data[c + MARK] = [], [], []
    for d in datasets:
        models = by_family(list(dict.fromkeys(rows.filter(pl.col("dataset") == d)["model"].to_list())), families)
        emphasis = {(s, k): _ranked({m: cell[s, d, m, k]["mean"] for m in models if (s, d, m, k) in cell})
                    for s in settings for k in metrics}
        for m in models:
            data["_group"].append(d)
            data["_stub"].append(m)
            for s in settings:
                data[f"{s}:n"].append(_seeds_text([cell[s, d, m, k] for k in metrics if (s, d, m, k) in cell],
                                                  m in deterministic))
                data[f"{s}:n" + EMPHASIS].append("")
                data[f"{s}:n" + MARK].append("")
                for k in metrics:
                    r = cell.get((s, d, m, k))
                    data[f"{s}:{k}"].append(DASH if r is None else _mean_std(r, m in deterministic))
                    data[f"{s}:{k}" + EMPHASIS].append(emphasis[s, k].get(m, ""))
                    data[f"{s}:{k}" + MARK].append("" if r is None else r["mark"] or "")
            for k in metrics:
                r = cell.get((settings[0], d, m, k))
                for part, text in (("paper", fmt_value(r["paper"]) if r else DASH),
                                   ("delta", fmt_rel(r["rel_diff_paper"]) if r else DASH)):
                    data[f"{part}:{k}"].append(text)
                    data[f"{part}:{k}" + EMPHASIS].append("")
                    data[f"{part}:{k}" + MARK].append("")
    labels = {c: "n" if c.endswith(":n") else short_metric_label(c.split(":")[1]) for c in columns}
    heads = {"paper": "Paper", "delta": "Δ paper", **{s: setting_title(s).split(", ", 1)[-1] for s in settings}}
    spanners = tuple((heads[p], tuple(c for c in columns if c.startswith(p + ":"))) for p in
                     [settings[0], "paper", "delta", *settings[1:]])
    notes = [
        f"Test split, mean ± sample standard deviation over n seeds: {selection_note(settings[0], select_metric).lower()}; "
        f"{selection_note(settings[1], select_metric).lower()} (validation carved from the given train part, test untouched). "
        "**Bold**: best of the column within a dataset; <ins>underlined</ins>: second best. **Paper**: the authors' "
        "headline number on the same files (their figure scripts); **Δ** = ours / paper − 1.",
        f"{md_stars(sig.legend_levels())}: two-sided Wilcoxon signed-rank test against {reference_model} over the test "
        "users under the same protocol (R@20 and N@20; p-values in `results/significance.csv`).",
        _provenance(runs, settings),
    ]
    return Table(
        id="tvdiff", title="TV-Diff's datasets: the authors' protocol beside ours", frame=pl.DataFrame(data),
        columns=tuple(columns), labels=labels, stub="Model", group="Dataset", spanners=spanners, notes=tuple(notes),
        right=tuple(columns),
    )


def headline_table(summary: pl.DataFrame, settings: Sequence[str], model_order: Sequence[str],
                   reference_model: str, families: dict[str, str] | None = None,
                   metrics: Sequence[str] = HEADLINE_METRICS) -> Table:
    """Models x (setting x ``metrics``): the test mean over seeds with its mark against
    ``reference_model``; best of each column bold, second underlined; "–" where a model did not
    run; models grouped by ``families`` (see :func:`by_family`). ``results/tables/headline.md``;
    the README's results block is this file."""
    cell = {(r["setting"], r["model"], r["metric"]): r for r in summary.iter_rows(named=True)}
    columns = [f"{s}:{k}" for s in settings for k in metrics]
    models = [m for m in model_order if any((s, m, k) in cell for s in settings for k in metrics)]
    models = by_family(models, families or {})
    data: dict[str, list] = {"_stub": models}
    for s in settings:
        for k in metrics:
            col = f"{s}:{k}"
            rows_k = {m: cell[s, m, k] for m in models if (s, m, k) in cell}
            _metric_column(data, col, models, rows_k, lambda m, r: fmt_value(r["mean"]))
    shown = summary.filter(pl.col("model").is_in(models), pl.col("setting").is_in(list(settings)))
    n_seeds = sorted(set(shown["n_seeds"].to_list()))
    note = (
        f"Test split, mean over {' or '.join(str(n) for n in n_seeds)} seeds per model; **bold**: best of the column, "
        f"<ins>underlined</ins>: second; {md_stars(sig.legend_levels())}: different from {reference_model} "
        f"(paired Wilcoxon over users). Written by `{GENERATED_BY}`."
    )
    return Table(
        id="headline", title="Headline", frame=pl.DataFrame(data), columns=tuple(columns),
        labels={f"{s}:{k}": f"{s} {short_metric_label(k)}" for s in settings for k in metrics},
        stub="Model", notes=(note,), right=tuple(columns),
    )


def short_metric_label(metric: str) -> str:
    """``recall@20`` -> ``R@20`` (column headers)."""
    name, _, k = metric.partition("@")
    short = {"recall": "R", "ndcg": "N", "precision": "P", "mrr": "MRR"}.get(name, name)
    return f"{short}@{k}"


def _fmt_statistic(x: float | None) -> str:
    if x is None or math.isnan(x):
        return DASH
    return f"{x:.1f}" if x != int(x) else f"{int(x)}"


def significance_view(significance: pl.DataFrame, reference_model: str = "DiffRec") -> Table:
    """Every row of significance.csv, grouped by setting (``results/significance.html``; the CSV
    has the full-precision numbers)."""
    rows = list(significance.iter_rows(named=True))
    data: dict[str, list] = {
        "_group": [r["setting"] for r in rows],
        "_stub": [r["model"] for r in rows],
        "dataset": [r["dataset"] for r in rows],
        "metric": [r["metric"] for r in rows],
        "seeds": [r["seeds"].replace(" ", ", ") for r in rows],
        "users": [str(r["n_users"]) for r in rows],
        "nonzero": [str(r["n_nonzero"]) for r in rows],
        "mean": [fmt_value(r["mean"]) for r in rows],
        "mean_ref": [fmt_value(r["mean_reference"]) for r in rows],
        "diff": [f"{r['mean_diff']:+.4f}" for r in rows],
        "w": [_fmt_statistic(r["statistic"]) for r in rows],
        "p": [fmt_p(r["p_value"]) for r in rows],
    }
    data["p" + MARK] = [r["mark"] or "" for r in rows]
    labels = {"dataset": "Dataset", "metric": "Metric", "seeds": "Seeds", "users": "Users",
              "nonzero": "Users with a difference", "mean": "Mean", "mean_ref": f"Mean {reference_model}",
              "diff": f"Difference (model − {reference_model})", "w": "Wilcoxon W", "p": "p"}
    columns = tuple(labels)
    note = (
        f"Each row: a two-sided Wilcoxon signed-rank test (`scipy.stats.wilcoxon`, defaults: users with equal "
        f"values dropped, normal approximation above 50 users) of the model against {reference_model} on the same "
        "dataset and setting, paired over the test users, each user's values averaged over the seeds both models "
        f"ran. Marks after p: {md_stars(sig.legend_levels())}; none for p ≥ {sig.MARKS[-1][0]:g}. The sign of the "
        "difference is the direction. No correction for multiple comparisons. Full precision: "
        f"`results/significance.csv`. Generated by `{GENERATED_BY}`; do not edit by hand."
    )
    if not rows:
        note = f"No tests: no setting has both {reference_model} and another model. " + note
    schema = {c: pl.String for c in data}
    return Table(
        id="significance", title=f"Paired significance tests against {reference_model}",
        frame=pl.DataFrame(data, schema=schema), columns=columns, labels=labels, stub="Model", group="Setting",
        notes=(note,), right=("users", "nonzero", "mean", "mean_ref", "diff", "w", "p"),
    )
