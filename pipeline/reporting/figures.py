"""Figures of the aggregate stage: polars frames / dicts in, PNG bytes out.

matplotlib's object API with the Agg canvas (no pyplot, no display, no global backend switch),
inside an ``rc_context`` reset to matplotlib's defaults plus :data:`STYLE`, so a user's
matplotlibrc cannot change the pictures. PNGs carry no metadata (``Software`` dropped; Agg
writes no timestamp), so the same inputs give the same bytes with the same matplotlib and
FreeType (matplotlib's wheels bundle both, and its own DejaVu Sans font).

* :func:`validation_curves`: validation ``select_metric`` per epoch, mean over seeds, one line
  per model, one panel per dataset of a setting;
* :func:`bar_chart`: test Recall@20 / NDCG@20 mean ± std over seeds per model, with the
  significance marks against the reference model;
* :func:`efficiency`: DiffRec vs L-DiffRec parameters, peak memory and time
  (``results/efficiency.json``, written by ``benchmarks/bench_efficiency.py``).
"""

from __future__ import annotations

import io
import math
from typing import Any, Sequence

import polars as pl

from pipeline.reporting.significance import legend_levels

DPI = 110
STYLE = {
    "font.family": "DejaVu Sans",
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "legend.fontsize": 8,
    "legend.frameon": False,
    "savefig.dpi": DPI,
    "path.simplify": False,
}
BAR_METRICS: tuple[str, ...] = ("recall@20", "ndcg@20")
METRIC_LABELS = {"recall": "Recall", "ndcg": "NDCG", "precision": "Precision", "mrr": "MRR"}
COLORS = ("#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C")
# Model lines: matplotlib's tab10 colours, then the same colours with another marker, so no two
# of up to len(LINE_COLORS) x len(LINE_MARKERS) models share colour and marker.
LINE_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
               "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")  # fmt: skip
LINE_MARKERS = ("o", "s", "^", "D")


def metric_label(metric: str) -> str:
    name, _, k = metric.partition("@")
    return f"{METRIC_LABELS.get(name, name)}@{k}" if k else METRIC_LABELS.get(name, name)


def _wrap(name: str) -> str:
    """Model names on two lines at a parenthesis: ``L-DiffRec\\n(released emb.)``."""
    return name.replace(" (", "\n(")


def _render(draw, size: tuple[float, float], ncols: int = 1) -> bytes:
    """Draw on a fresh figure with the fixed style and return its PNG bytes."""
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    with matplotlib.rc_context():
        matplotlib.rcdefaults()  # ignore any matplotlibrc of this machine
        matplotlib.rcParams.update(STYLE)
        fig = Figure(figsize=size, dpi=DPI, layout="constrained")
        FigureCanvasAgg(fig)
        axes = fig.subplots(1, ncols, squeeze=False)[0]
        draw(fig, list(axes))
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


def _line_style(models: Sequence[str], model: str) -> dict[str, str]:
    """The colour and marker of ``model``'s line: unique among ``models`` (an error past the
    palette, rather than two models drawn alike)."""
    i = list(models).index(model)
    if i >= len(LINE_COLORS) * len(LINE_MARKERS):
        raise ValueError(f"figures: {len(models)} models exceed the {len(LINE_COLORS) * len(LINE_MARKERS)} line styles")
    return {"color": LINE_COLORS[i % len(LINE_COLORS)], "marker": LINE_MARKERS[i // len(LINE_COLORS)]}


# --------------------------------------------------------------------------------------------
# Validation curves


def validation_curves(history: pl.DataFrame, setting: str, metric: str, model_order: Sequence[str]) -> bytes:
    """One panel per dataset of ``setting``: validation ``metric`` per evaluated epoch.

    ``history``: dataset, setting, model, seed, epoch, value (validation ``metric``; epochs
    without an evaluation left out). Each model's line is the mean over its seeds; solid while
    every seed is still training, dotted where some have already stopped early (the mean is then
    over the seeds still running).
    """
    rows = history.filter(pl.col("setting") == setting)
    datasets = sorted(set(rows["dataset"].to_list()))
    present = set(rows["model"].to_list())
    models = [m for m in model_order if m in present] + sorted(present - set(model_order))

    def draw(fig, axes):
        for ax, dataset in zip(axes, datasets):
            part = rows.filter(pl.col("dataset") == dataset)
            for model in models:
                runs = part.filter(pl.col("model") == model)
                if runs.height == 0:
                    continue
                n_seeds = runs["seed"].n_unique()
                curve = runs.group_by("epoch").agg(pl.col("value").mean(), pl.len().alias("n")).sort("epoch")
                epochs, values, counts = curve["epoch"].to_list(), curve["value"].to_list(), curve["n"].to_list()
                full = [i for i, n in enumerate(counts) if n == n_seeds]
                last_full = full[-1] if full else -1
                style = _line_style(models, model)
                ax.plot(epochs[: last_full + 1], values[: last_full + 1], **style, markersize=3,
                        linewidth=1.4, label=f"{model} (n={n_seeds})")
                if last_full < len(epochs) - 1:
                    start = max(last_full, 0)
                    ax.plot(epochs[start:], values[start:], color=style["color"], linestyle=":", linewidth=1.2)
            ax.set_title(f"{dataset}, {setting}: validation {metric_label(metric)}")
            ax.set_xlabel("epoch")
            ax.set_ylabel(f"validation {metric_label(metric)} (mean over seeds)")
        # what the line styles mean, in the picture itself
        from matplotlib.lines import Line2D

        handles, labels = axes[0].get_legend_handles_labels()
        handles += [Line2D([], [], color="black", linewidth=1.4), Line2D([], [], color="black", linestyle=":", linewidth=1.2)]
        labels += ["solid: mean over all n seeds", "dotted: mean over the seeds\nstill training (others stopped)"]
        fig.legend(handles, labels, loc="outside right center")

    return _render(draw, (6.4 * len(datasets) + 2.6, 4.4), ncols=len(datasets))


# --------------------------------------------------------------------------------------------
# Test bars


def bar_chart(
    summary: pl.DataFrame,
    setting: str,
    model_order: Sequence[str],
    metrics: Sequence[str] = BAR_METRICS,
) -> bytes:
    """One panel per dataset of ``setting``: per model, a bar per metric (test mean over seeds)
    with ± one sample std as error bar and the significance mark above it."""
    rows = summary.filter(pl.col("setting") == setting, pl.col("metric").is_in(list(metrics)))
    datasets = sorted(set(rows["dataset"].to_list()))
    present = set(rows["model"].to_list())
    models = [m for m in model_order if m in present] + sorted(present - set(model_order))
    width = 0.8 / len(metrics)

    def draw(fig, axes):
        for ax, dataset in zip(axes, datasets):
            cell = {(r["model"], r["metric"]): r for r in rows.filter(pl.col("dataset") == dataset).iter_rows(named=True)}
            top = 0.0
            for j, metric in enumerate(metrics):
                xs, means, errs, marks = [], [], [], []
                for i, model in enumerate(models):
                    r = cell.get((model, metric))
                    if r is None:
                        continue
                    std = r["std"] if r["std"] is not None and not math.isnan(r["std"]) else 0.0
                    xs.append(i + (j - (len(metrics) - 1) / 2) * width)
                    means.append(r["mean"])
                    errs.append(std)
                    marks.append(r["mark"] or "")
                ax.bar(xs, means, width * 0.92, yerr=errs, capsize=3, color=COLORS[j % len(COLORS)],
                       label=metric_label(metric), error_kw={"linewidth": 1.0})
                for x, m, e, mark in zip(xs, means, errs, marks):
                    ax.annotate(f"{m:.4f}", (x, m + e), xytext=(0, 2), textcoords="offset points",
                                ha="center", va="bottom", fontsize=6.5, rotation=90)
                    if mark:
                        ax.annotate(mark, (x, m + e), xytext=(0, 30), textcoords="offset points",
                                    ha="center", va="bottom", fontsize=9, fontweight="bold", color="#B00000")
                    top = max(top, m + e)
            ax.set_xticks(range(len(models)), [_wrap(m) for m in models], fontsize=8)
            ax.set_ylim(0, top * 1.3 if top > 0 else 1)
            ax.set_ylabel("test value, mean ± std over seeds")
            ax.set_title(f"{dataset}, {setting}: test {' and '.join(metric_label(m) for m in metrics)}")
            ax.legend(loc="upper left", ncols=len(metrics))
            ax.grid(axis="x", visible=False)
            tested = [r["tested_against"] for r in cell.values() if r.get("tested_against")]
            if tested:  # what the marks mean, in the picture itself
                ax.text(0.995, 0.99, f"{legend_levels()}: differs from {tested[0]} (paired Wilcoxon over users)",
                        transform=ax.transAxes, ha="right", va="top", fontsize=8, color="#B00000")

    return _render(draw, (max(5.0, 1.5 * len(models) + 1.5) * len(datasets), 4.2), ncols=len(datasets))


# --------------------------------------------------------------------------------------------
# Efficiency


def efficiency(record: dict[str, Any]) -> bytes:
    """Three panels from ``results/efficiency.json``: parameters per dataset, peak RSS and
    seconds per epoch / per evaluation pass where measured, one bar per model."""
    rows = record["rows"]
    models = list(dict.fromkeys(r["model"] for r in rows))
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    cell = {(r["dataset"], r["model"]): r for r in rows}
    measured = [d for d in datasets if any(cell.get((d, m), {}).get("seconds_per_epoch") is not None for m in models)]
    width = 0.8 / len(models)

    def bars(ax, groups, value, fmt):
        for j, model in enumerate(models):
            xs, ys = [], []
            for i, group in enumerate(groups):
                v = value(group, model)
                if v is not None:
                    xs.append(i + (j - (len(models) - 1) / 2) * width)
                    ys.append(v)
            ax.bar(xs, ys, width * 0.92, color=COLORS[j % len(COLORS)], label=model)
            for x, y in zip(xs, ys):  # vertical: neighbouring bars' labels never overlap
                ax.annotate(fmt(y), (x, y), xytext=(0, 2), textcoords="offset points", ha="center", va="bottom",
                            fontsize=7, rotation=90)
        ax.set_xticks(range(len(groups)), [g if isinstance(g, str) else g[1] for g in groups])
        ax.grid(axis="x", visible=False)
        ax.margins(y=0.25)

    def draw(fig, axes):
        ax = axes[0]
        bars(ax, datasets, lambda d, m: cell.get((d, m), {}).get("n_parameters") and cell[(d, m)]["n_parameters"] / 1e6,
             lambda y: f"{y:.1f}M")
        ax.set_title("parameters")
        ax.set_ylabel("millions of parameters")
        ax.legend(loc="upper left")

        ax = axes[1]
        bars(ax, measured, lambda d, m: cell.get((d, m), {}).get("peak_rss_mb"), lambda y: f"{y:.0f}")
        ax.set_title("peak memory (RSS)")
        ax.set_ylabel("MB")

        ax = axes[2]
        groups = [(d, f"{d}\nper epoch") for d in measured] + [(d, f"{d}\nper evaluation") for d in measured]
        keys = ["seconds_per_epoch"] * len(measured) + ["seconds_per_eval"] * len(measured)
        lookup = dict(zip(groups, keys))
        bars(ax, groups, lambda g, m: cell.get((g[0], m), {}).get(lookup[g]), lambda y: f"{y:.2f}")
        ax.set_title("time")
        ax.set_ylabel("seconds")
        unmeasured = [d for d in datasets if d not in measured]
        title = f"{', '.join(measured)} measured"
        if record.get("torch_threads") and record.get("machine"):
            title += f" with {record['torch_threads']} torch threads on {record['machine']}"
        if unmeasured:
            title += f"; {', '.join(unmeasured)}: parameter counts only"
        # on two lines of their own, so a long model list or command is never clipped at the edges
        fig.suptitle(f"{', '.join(models)}\n{title} ({record.get('command', 'benchmarks/bench_efficiency.py')})",
                     fontsize=9)

    return _render(draw, (12.0, 4.4), ncols=3)
