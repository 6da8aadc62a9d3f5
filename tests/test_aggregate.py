"""Aggregate stage: run collection, metrics.csv / runs.csv, per-setting tables, DVC metrics,
figures, determinism. (The significance tests themselves: tests/test_significance.py.)"""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path

import polars as pl
import pytest

from pipeline.reporting import aggregate, tables
from pipeline.stages.aggregate import main

SPLITS = {
    "ml-1m_clean": {"dataset": "ml-1m", "setting": "clean", "source": "test", "format": "diffrec"},
    "ml-1m_noisy": {"dataset": "ml-1m", "setting": "noisy", "source": "test", "format": "diffrec"},
}
SEEDS = (1, 2)
METRICS = [f"{m}@{k}" for m in ("recall", "ndcg", "precision", "mrr") for k in (10, 20, 50, 100)]
# Test-split values of the table metrics, per (split, seed).
TEST = {
    ("ml-1m_clean", 1): {"recall@10": 0.10, "recall@20": 0.17, "ndcg@10": 0.08, "ndcg@20": 0.11},
    ("ml-1m_clean", 2): {"recall@10": 0.12, "recall@20": 0.19, "ndcg@10": 0.09, "ndcg@20": 0.11},
    ("ml-1m_noisy", 1): {"recall@10": 0.06, "recall@20": 0.12, "ndcg@10": 0.05, "ndcg@20": 0.07},
    ("ml-1m_noisy", 2): {"recall@10": 0.07, "recall@20": 0.12, "ndcg@10": 0.05, "ndcg@20": 0.07},
}
PAPER = "DiffRec (SIGIR 2023)"
AUTHORS = "official DiffRec code, measured on a 2-core CPU machine of this project's kind, seed 1"
REFERENCE_ROWS = [
    (PAPER, "clean", "ml-1m", "DiffRec", "recall@10", 0.1, ""),
    (PAPER, "clean", "ml-1m", "DiffRec", "recall@20", 0.2, ""),
    (PAPER, "clean", "ml-1m", "DiffRec", "ndcg@10", 0.085, ""),
    # no paper ndcg@20 for clean: shown as a dash
    (PAPER, "noisy", "ml-1m", "DiffRec", "recall@20", 0.1236, "a paper note"),
    (PAPER, "clean", "ml-1m", "L-DiffRec", "recall@20", 0.1809, ""),  # model we did not run
    (PAPER, "clean", "yelp", "DiffRec", "recall@20", 0.096, ""),  # dataset we did not run
    (AUTHORS, "clean", "ml-1m", "DiffRec", "recall@20", 0.16, "159 s wall"),
    ("TV-Diff (KDD 2026), own split", "own-split", "ml-1m", "DiffRec", "recall@20", 0.5, "not comparable"),
    ("Some other paper", "clean", "ml-1m", "DiffRec", "recall@10", 0.9, ""),  # unknown source: ignored
]


def _metric_values(split: str, seed: int, eval_split: str) -> dict[str, float]:
    """All 16 metrics: the table metrics from TEST, deterministic fillers for the rest."""
    values = {m: round(0.3 + 0.01 * i + 0.001 * seed, 6) for i, m in enumerate(METRICS)}
    values.update(TEST.get((split, seed), dict.fromkeys(TEST["ml-1m_clean", 1], 0.9)))
    if eval_split == "valid":
        values = {m: v / 2 for m, v in values.items()}
    return values


def _write_run(runs: Path, split: str, model: str, seed: int) -> Path:
    """metrics.json, history.csv (validation every 5 epochs) and per_user.parquet (4 test users
    whose mean is the run's test recall@20 / ndcg@20, plus valid rows) of one run."""
    path = runs / split / model / f"seed{seed}" / "metrics.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "model": model, "split": split, "seed": seed,
        "best_epoch": 5 * seed, "epochs_trained": 20 + seed, "n_parameters": 1000,
        "valid": _metric_values(split, seed, "valid"), "test": _metric_values(split, seed, "test"),
    }
    path.write_text(json.dumps(record, indent=2, sort_keys=True))
    epochs = range(1, 21 + seed)
    history = pl.DataFrame({
        "epoch": list(epochs),
        "loss": [1.0 / e for e in epochs],
        "valid_recall@20": [0.1 + 0.001 * e + 0.01 * seed if e % 5 == 0 else None for e in epochs],
    })
    history.write_csv(path.parent / "history.csv")
    test = record["test"]
    spread = [-0.03, -0.01, 0.01, 0.03]
    pl.DataFrame({
        "user": [0, 1, 2, 3] * 2,
        "split": ["valid"] * 4 + ["test"] * 4,
        "recall@20": [0.5] * 4 + [test["recall@20"] + d for d in spread],
        "ndcg@20": [0.5] * 4 + [test["ndcg@20"] + d for d in spread],
    }).write_parquet(path.parent / "per_user.parquet")
    return path


@pytest.fixture
def setup(tmp_path):
    runs = tmp_path / "runs"
    for split in SPLITS:
        for seed in SEEDS:
            _write_run(runs, split, "diffrec", seed)
    # Folders the experiments block does not name are ignored.
    (runs / "ml-1m_clean" / "diffrec" / "seed9").mkdir(parents=True)
    (runs / "ml-1m_clean" / "diffrec" / "seed9" / "metrics.json").write_text("not json")
    _write_run(runs, "ml-1m_clean", "diffrec", 3)
    _write_run(runs, "ml-1m_temporal", "diffrec", 1)
    paper = tmp_path / "paper_results.csv"
    with open(paper, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["source", "setting", "dataset", "model", "metric", "value", "note"])
        writer.writerows(REFERENCE_ROWS)
    params = {
        "splits": SPLITS,
        "training": {"select_metric": "recall@20"},
        "experiments": [{"splits": list(SPLITS), "models": ["diffrec"], "seeds": list(SEEDS)}],
        "paper_results": str(paper),
    }
    return params, runs, tmp_path / "results"


def _read_csv(path: Path) -> pl.DataFrame:
    return pl.read_csv(path)


def _cell(table: pl.DataFrame, metric: str) -> dict:
    rows = table.filter(pl.col("metric") == metric)
    assert rows.height == 1
    return rows.row(0, named=True)


OUTPUTS = (
    ["metrics.csv", "runs.csv", "metrics.json", "significance.csv", "significance.html", "tables/headline.md"]
    + [f"tables/{s}.{e}" for s in ("clean", "noisy") for e in ("md", "csv", "tex", "html")]
    + [f"tables/reproduction.{e}" for e in ("md", "tex", "html")]
    + [f"figures/{f}_{s}.png" for s in ("clean", "noisy") for f in ("valid_curves", "test_bars")]
)


def test_outputs_written(setup, capsys):
    params, runs, out = setup
    main(params, runs, out)
    expected = OUTPUTS
    for name in expected:
        assert (out / name).is_file(), name
    assert not (out / "tables" / "temporal.md").exists()
    printed = capsys.readouterr().out.splitlines()
    assert printed == [f"wrote {out / name}" for name in expected]
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]


def test_setting_csv_values(setup):
    params, runs, out = setup
    main(params, runs, out)
    clean = _read_csv(out / "tables" / "clean.csv")
    assert tuple(clean.columns) == tables.SUMMARY_COLUMNS
    assert clean["metric"].to_list() == ["recall@10", "recall@20", "ndcg@10", "ndcg@20"]
    assert set(clean["model"]) == {"DiffRec"} and set(clean["dataset"]) == {"ml-1m"}
    assert set(clean["setting"]) == {"clean"} and set(clean["n_seeds"]) == {2}

    r10 = _cell(clean, "recall@10")
    assert r10["mean"] == pytest.approx(0.11, abs=1e-15)
    assert r10["std"] == pytest.approx(statistics.stdev([0.10, 0.12]), rel=1e-12)
    assert r10["std"] == pytest.approx(0.01414213562373095, rel=1e-9)
    assert r10["paper"] == 0.1  # the "other paper" row (0.9) is ignored
    assert r10["rel_diff_paper"] == pytest.approx(0.1, rel=1e-12)
    assert r10["authors_code"] is None and r10["rel_diff_authors_code"] is None

    r20 = _cell(clean, "recall@20")
    assert r20["mean"] == pytest.approx(0.18, abs=1e-15)
    assert r20["paper"] == 0.2
    assert r20["rel_diff_paper"] == pytest.approx(-0.1, rel=1e-12)
    assert r20["authors_code"] == 0.16
    assert r20["rel_diff_authors_code"] == pytest.approx(0.125, rel=1e-12)

    n20 = _cell(clean, "ndcg@20")
    assert n20["mean"] == pytest.approx(0.11, abs=1e-15) and n20["std"] == 0.0
    assert n20["paper"] is None and n20["rel_diff_paper"] is None

    noisy = _read_csv(out / "tables" / "noisy.csv")
    nr20 = _cell(noisy, "recall@20")
    assert nr20["mean"] == pytest.approx(0.12, abs=1e-15)
    assert nr20["rel_diff_paper"] == pytest.approx(0.12 / 0.1236 - 1, rel=1e-12)
    assert nr20["authors_code"] is None  # the authors' code row is for clean only


def test_metrics_csv(setup):
    params, runs, out = setup
    main(params, runs, out)
    text = (out / "metrics.csv").read_text()
    metrics = _read_csv(out / "metrics.csv")
    assert tuple(metrics.columns) == tables.METRICS_COLUMNS
    assert metrics.height == len(SPLITS) * len(SEEDS) * 2 * len(METRICS) == 128
    assert set(metrics["split"]) == {"valid", "test"} and set(metrics["seed"]) == set(SEEDS)
    assert set(metrics["model"]) == {"DiffRec"}
    assert "ml-1m,clean,DiffRec,1,test,recall@20,0.17\n" in text
    assert "ml-1m,noisy,DiffRec,2,valid,recall@10,0.035\n" in text
    for (split, seed), values in TEST.items():
        setting = SPLITS[split]["setting"]
        for metric, value in values.items():
            got = metrics.filter(
                pl.col("setting") == setting, pl.col("seed") == seed, pl.col("split") == "test", pl.col("metric") == metric
            )["value"].to_list()
            assert got == [value]
    # sorted by dataset, setting, model, seed, split, then metric name and cut-off
    first = metrics.head(len(METRICS))
    assert first["setting"].unique().to_list() == ["clean"] and first["seed"].unique().to_list() == [1]
    assert first["split"].unique().to_list() == ["test"]
    assert first["metric"].to_list()[:4] == ["mrr@10", "mrr@20", "mrr@50", "mrr@100"]


def test_runs_csv(setup):
    params, runs, out = setup
    main(params, runs, out)
    assert (out / "runs.csv").read_text() == (
        "dataset,setting,model,seed,best_epoch,epochs_trained,n_parameters\n"
        "ml-1m,clean,DiffRec,1,5,21,1000\n"
        "ml-1m,clean,DiffRec,2,10,22,1000\n"
        "ml-1m,noisy,DiffRec,1,5,21,1000\n"
        "ml-1m,noisy,DiffRec,2,10,22,1000\n"
    )


def test_deterministic(setup, tmp_path):
    params, runs, out = setup
    main(params, runs, out)
    first = {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    main(params, runs, out)  # again, over the same folder
    again = {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    other = tmp_path / "results2"
    main(params, runs, other)
    elsewhere = {p.relative_to(other): p.read_bytes() for p in sorted(other.rglob("*")) if p.is_file()}
    assert first == again == elsewhere
    assert sorted(str(p) for p in first) == sorted(OUTPUTS)


def test_missing_run_named(setup):
    params, runs, out = setup
    missing = runs / "ml-1m_noisy" / "diffrec" / "seed2" / "metrics.json"
    missing.unlink()
    with pytest.raises(FileNotFoundError, match=r"ml-1m_noisy/diffrec/seed2/metrics\.json"):
        main(params, runs, out)
    assert not out.exists()  # nothing is written when a run is missing


def test_mismatched_run_rejected(setup):
    params, runs, out = setup
    path = runs / "ml-1m_clean" / "diffrec" / "seed2" / "metrics.json"
    record = json.loads(path.read_text())
    record["seed"] = 7
    path.write_text(json.dumps(record))
    with pytest.raises(ValueError, match="seed2"):
        main(params, runs, out)


def test_display_name_falls_back_to_key():
    assert aggregate.display_name("diffrec") == "DiffRec"
    assert aggregate.display_name("unknown-model") == "unknown-model"
    assert aggregate.family("unknown-model") == "other" and not aggregate.deterministic("unknown-model")


@pytest.mark.parametrize(
    "value, text",
    [(-0.04, "-4.0%"), (0.125, "+12.5%"), (-1e-9, "+0.0%"), (None, "–"), (float("nan"), "–")],
)
def test_fmt_rel(value, text):
    assert tables.fmt_rel(value) == text


def test_reference_duplicates_rejected():
    raw = pl.DataFrame(
        {
            "source": [PAPER, PAPER], "setting": ["clean"] * 2, "dataset": ["ml-1m"] * 2,
            "model": ["DiffRec"] * 2, "metric": ["recall@20"] * 2, "value": [0.1, 0.2], "note": ["", ""],
        }
    )
    with pytest.raises(ValueError, match="more than one paper value for clean/ml-1m/DiffRec/recall@20"):
        tables.reference_table(raw)


# --------------------------------------------------------------------------------------------
# metrics.json (DVC metrics), HTML tables, figures, efficiency


def test_metrics_json(setup):
    params, runs, out = setup
    main(params, runs, out)
    tree = json.loads((out / "metrics.json").read_text())
    assert list(tree) == ["clean", "noisy"]
    cell = tree["clean"]["ml-1m"]["DiffRec"]["recall@20"]
    assert cell == {"mean": pytest.approx(0.18, abs=1e-15), "n_seeds": 2, "std": pytest.approx(0.01414213562373095)}
    assert list(tree["clean"]["ml-1m"]["DiffRec"]) == ["recall@10", "recall@20", "ndcg@10", "ndcg@20"]
    assert "p_value" not in cell  # the reference model is not tested against itself


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_figures(setup):
    params, runs, out = setup
    main(params, runs, out)
    for name in ("valid_curves_clean", "test_bars_clean", "valid_curves_noisy", "test_bars_noisy"):
        data = (out / "figures" / f"{name}.png").read_bytes()
        width, height = _png_size(data)
        assert 400 < width < 2000 and 300 < height < 1000, (name, width, height)
        # no metadata that could change between runs or machines: no Software / date chunks
        assert b"tEXt" not in data and b"tIME" not in data and b"matplotlib" not in data


def test_figures_ignore_matplotlibrc(setup, tmp_path, monkeypatch):
    """A user's style settings do not change the pictures."""
    import matplotlib

    params, runs, out = setup
    main(params, runs, out)
    before = {p.name: p.read_bytes() for p in (out / "figures").glob("*.png")}
    with matplotlib.rc_context({"lines.linewidth": 7.0, "font.size": 20, "axes.facecolor": "black"}):
        main(params, runs, tmp_path / "again")
    after = {p.name: p.read_bytes() for p in (tmp_path / "again" / "figures").glob("*.png")}
    assert before == after


def test_validation_curve_data(setup):
    params, runs, _ = setup
    history = aggregate.collect_history(params, runs, "recall@20")
    clean = history.filter(pl.col("setting") == "clean", pl.col("seed") == 1)
    assert clean["epoch"].to_list() == [5, 10, 15, 20]  # epochs without an evaluation are dropped
    assert clean["value"].to_list() == pytest.approx([0.115, 0.12, 0.125, 0.13])
    assert set(history.columns) == {"dataset", "setting", "model", "seed", "epoch", "value"}


EFFICIENCY = {
    "command": "python benchmarks/bench_efficiency.py --epochs 3", "epochs": 3, "machine": "x86_64",
    "torch_threads": 2, "description": "test",
    "rows": [
        {"dataset": "ml-1m", "model": "DiffRec", "n_parameters": 3622320, "peak_rss_mb": 572,
         "seconds_per_epoch": 1.33, "seconds_per_eval": 2.91},
        {"dataset": "ml-1m", "model": "L-DiffRec", "n_parameters": 1911648, "peak_rss_mb": 513,
         "seconds_per_epoch": 0.63, "seconds_per_eval": 1.03},
        {"dataset": "yelp", "model": "DiffRec", "n_parameters": 68835505, "peak_rss_mb": None,
         "seconds_per_epoch": None, "seconds_per_eval": None},
        {"dataset": "yelp", "model": "L-DiffRec", "n_parameters": 20855705, "peak_rss_mb": None,
         "seconds_per_epoch": None, "seconds_per_eval": None},
    ],
}


def test_efficiency_figure(setup, tmp_path, capsys):
    params, runs, out = setup
    path = tmp_path / "efficiency.json"
    path.write_text(json.dumps(EFFICIENCY))
    main(params, runs, out, efficiency=path)
    assert capsys.readouterr().out.splitlines()[-1] == f"wrote {out / 'figures' / 'efficiency.png'}"
    width, height = _png_size((out / "figures" / "efficiency.png").read_bytes())
    assert width > height > 300
    with pytest.raises(FileNotFoundError, match="bench_efficiency.py"):
        main(params, runs, tmp_path / "other", efficiency=tmp_path / "absent.json")
    path.write_text(json.dumps({"rows": [{"dataset": "ml-1m"}]}))
    with pytest.raises(ValueError, match="expected 'rows'"):
        main(params, runs, tmp_path / "other", efficiency=path)


def test_missing_per_user_named(setup):
    params, runs, out = setup
    (runs / "ml-1m_clean" / "diffrec" / "seed1" / "per_user.parquet").unlink()
    with pytest.raises(FileNotFoundError, match=r"ml-1m_clean/diffrec/seed1/per_user\.parquet.*dvc pull"):
        main(params, runs, out)
    assert not out.exists()


def test_history_without_the_column_rejected(setup):
    params, runs, out = setup
    pl.DataFrame({"epoch": [1], "loss": [0.5]}).write_csv(runs / "ml-1m_noisy" / "diffrec" / "seed2" / "history.csv")
    with pytest.raises(ValueError, match="valid_recall@20"):
        main(params, runs, out)


# --------------------------------------------------------------------------------------------
# dvc.yaml: the top-level validation-curve plots list every planned run


def test_dvc_plots_cover_planned_runs():
    import yaml

    from pipeline.config import load_params
    from pipeline.plan import trained_runs as planned_runs

    root = Path(__file__).resolve().parents[1]
    params = load_params(root / "params.yaml")
    spec = yaml.safe_load((root / "dvc.yaml").read_text())
    listed = {}
    for entry in spec.get("plots", []):
        ((plot_id, props),) = entry.items()
        if plot_id.startswith("valid_recall@20_"):
            assert props["x"] == "epoch"
            listed.update(props["y"])
    planned = {f"runs/{split}/{model}/seed{seed}/history.csv" for split, model, seed in planned_runs(params)}
    assert set(listed) == planned, (
        "dvc.yaml top-level plots: add/remove the history.csv of "
        f"{sorted(planned ^ set(listed))} (one valid_recall@20_<split> plot per split)"
    )
    assert set(listed.values()) == {f"valid_{params['training']['select_metric']}"}


def test_every_model_line_has_its_own_colour_and_marker():
    """valid_curves: no two models are drawn alike (the old 8-colour cycle gave 14 models 6 shared colours)."""
    from pipeline.reporting.figures import LINE_COLORS, LINE_MARKERS, _line_style

    n = len(LINE_COLORS) * len(LINE_MARKERS)
    models = [f"model {i}" for i in range(n)]
    styles = {tuple(sorted(_line_style(models, m).items())) for m in models}
    assert len(styles) == n
    with pytest.raises(ValueError, match="exceed"):
        _line_style([*models, "one more"], "one more")


def _md_rows(text: str) -> list[list[str]]:
    """The cells of every row of the Markdown table in ``text`` (header first, rule dropped)."""
    rows = [line for line in text.splitlines() if line.startswith("|")]
    return [[c.strip() for c in line.strip("|").split("|")] for line in rows if not set(line) <= set("|-: ")]


def test_setting_pages(setup):
    """The setting page in each syntax: models x metrics, mean ± std, provenance, no paper columns."""
    params, runs, out = setup
    main(params, runs, out)
    md = (out / "tables" / "clean.md").read_text()
    assert md.startswith("# Results: clean setting\n")
    rows = _md_rows(md)
    assert rows == [
        ["Group", "Model", "n", "R@10", "R@20", "N@10", "N@20"],
        ["diffusion", "DiffRec", "2", "**0.1100 ± 0.0141**", "**0.1800 ± 0.0141**", "**0.0850 ± 0.0071**",
         "**0.1100 ± 0.0000**"],
    ]
    assert "No significance marks: DiffRec (the reference) is the only model of this table." in md
    assert "from 2 runs (split(s) ml-1m_clean; seed(s) 1, 2); do not edit by hand." in md
    assert "`results/tables/reproduction.md`" in md and "Paper" not in md

    page = (out / "tables" / "clean.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and page.endswith("</html>\n")
    assert "<script" not in page and "http" not in page
    assert "<strong>0.1800 ± 0.0141</strong>" in page and "Results: clean setting" in page

    tex = (out / "tables" / "clean.tex").read_text()
    assert tex.startswith("% Generated by `python -m pipeline aggregate`; do not edit by hand.")
    assert "\\toprule" in tex and "\\bottomrule" in tex and "\\multicolumn{5}{c}{ml-1m}" in tex
    assert "DiffRec & 2 & \\textbf{0.1100 $\\pm$ 0.0141} & \\textbf{0.1800 $\\pm$ 0.0141} &" in tex


def _summary(rows: list[tuple]) -> pl.DataFrame:
    """A summary frame of (model, metric, n_seeds, n_distinct, mean, std, mark) rows (clean, ml-1m)."""
    data = [
        {"setting": "clean", "dataset": "ml-1m", "model": m, "metric": k, "n_seeds": n, "n_distinct": nd,
         "mean": mean, "std": std, "mark": mark}
        for m, k, n, nd, mean, std, mark in rows
    ]
    return pl.DataFrame(data)


def test_setting_table_groups_ranks_marks_and_one_run_for_deterministic_models():
    rows = []
    means = {"DiffRec": 0.20, "MultiVAE": 0.19, "MostPop": 0.10, "CDAE": 0.19}
    for model, mean in means.items():
        for metric in ("recall@20", "ndcg@20"):
            deterministic = model == "MostPop"
            mark = "" if model == "DiffRec" else ("**" if model == "MostPop" else "*" if model == "CDAE" else "")
            rows.append((model, metric, 3, 1 if deterministic else 3, mean, 0.0 if deterministic else 0.01, mark))
    summary = _summary(rows)
    runs = pl.DataFrame({"split_name": ["ml-1m_clean"] * 3, "setting": ["clean"] * 3, "dataset": ["ml-1m"] * 3,
                         "model": ["MostPop"] * 3, "seed": [1, 2, 3]})
    families = {"DiffRec": "diffusion", "MultiVAE": "generative", "MostPop": "classic", "CDAE": "generative"}
    table = tables.setting_table(summary, runs, "clean", "recall@20", families, None, "DiffRec",
                                 table_metrics=("recall@20", "ndcg@20"), deterministic={"MostPop"})
    md = tables.to_markdown(table)
    assert _md_rows(md) == [
        ["Group", "Model", "n", "R@20", "N@20"],
        ["classic", "MostPop", "1", "0.1000\\*\\*", "0.1000\\*\\*"],
        ["generative", "MultiVAE", "3", "<ins>0.1900 ± 0.0100</ins>", "<ins>0.1900 ± 0.0100</ins>"],
        ["", "CDAE", "3", "<ins>0.1900 ± 0.0100</ins>\\*", "<ins>0.1900 ± 0.0100</ins>\\*"],
        ["diffusion", "DiffRec", "3", "**0.2000 ± 0.0100**", "**0.2000 ± 0.0100**"],
    ]
    assert "MostPop is deterministic: its runs with seeds 1, 2, 3 gave identical values, shown as one run (n = 1)." in md

    page = tables.to_html(table)
    assert "<strong>0.2000 ± 0.0100</strong>" in page and "<u>0.1900 ± 0.0100</u><sup>*</sup>" in page
    assert ">0.1000<sup>**</sup><" in page
    tex = tables.to_latex(table)
    assert "CDAE & 3 & \\underline{0.1900 $\\pm$ 0.0100}$^{*}$ &" in tex
    assert "MostPop & 1 & 0.1000$^{**}$ & 0.1000$^{**}$ \\\\" in tex


def test_deterministic_model_with_differing_seeds_is_an_error():
    summary = _summary([("MostPop", "recall@20", 2, 2, 0.1, 0.01, "")])
    runs = pl.DataFrame(schema={"split_name": pl.String, "setting": pl.String, "dataset": pl.String,
                                "model": pl.String, "seed": pl.Int64})
    with pytest.raises(ValueError, match="MostPop is deterministic, but its runs on ml-1m clean gave different values"):
        tables.setting_table(summary, runs, "clean", "recall@20", {}, table_metrics=("recall@20",),
                             deterministic={"MostPop"})


def test_reproduction_table(setup):
    """Every model with a reference number: ours, the reference, Δ; the rest named as not compared."""
    params, runs, out = setup
    main(params, runs, out)
    md = (out / "tables" / "reproduction.md").read_text()
    rows = _md_rows(md)
    assert rows[0][:6] == ["Setting", "Model", "Reference", "R@10 Ours", "R@10 Ref.", "R@10 Δ"]
    assert rows[1] == ["clean · ml-1m", "DiffRec", "Paper", "0.1100", "0.1000", "+10.0%", "0.1800", "0.2000",
                       "-10.0%", "0.0850", "0.0850", "+0.0%", "0.1100", "–", "–"]
    assert rows[2] == ["", "DiffRec", "Authors' code (2-core CPU)", "0.1100", "–", "–", "0.1800", "0.1600",
                       "+12.5%", "0.0850", "–", "–", "0.1100", "–", "–"]
    assert rows[3][:3] == ["noisy · ml-1m", "DiffRec", "Paper"] and rows[3][6:9] == ["0.1200", "0.1236", "-2.9%"]
    assert len(rows) == 4  # L-DiffRec (not run) and the yelp row have no row of ours
    assert "Authors' code (2-core CPU), clean ml-1m DiffRec: 159 s wall" in md
    assert "Paper, noisy ml-1m DiffRec: a paper note" in md
    # the own-split row is read as the authors' protocol on its data (no run of ours there)
    assert "not compared): clean yelp (1 model); authors ml-1m (1 model)." in md
    assert "\\multicolumn{3}{c}{R@10}" in (out / "tables" / "reproduction.tex").read_text()


def test_headline_table(setup):
    """Models x (setting x R@20, N@20): the mean, its mark against DiffRec, the column's best in bold."""
    params, runs, out = setup
    main(params, runs, out)
    text = (out / "tables" / "headline.md").read_text()
    rows = _md_rows(text)
    assert rows[0] == ["Model", "clean R@20", "clean N@20", "noisy R@20", "noisy N@20"]
    assert rows[1] == ["DiffRec", "**0.1800**", "**0.1100**", "**0.1200**", "**0.0700**"]
    assert "mean over 2 seeds" in text and not text.startswith("#")


def test_own_split_table_puts_the_paper_beside_the_authors_protocol_and_ours_beside_it():
    """TV-Diff's datasets: the test-selected numbers with the paper's and Δ, then ours; best bold
    within a dataset; the reference number read from its own-split row."""
    raw = pl.DataFrame({"source": ["TV-Diff (KDD 2026), figure scripts"] * 2, "setting": ["own-split"] * 2,
                        "dataset": ["lastfm"] * 2, "model": ["TV-Diff"] * 2, "metric": ["recall@20", "ndcg@20"],
                        "value": [0.30, 0.25], "note": ["", ""]})
    reference = tables.reference_table(raw)
    assert reference["setting"].to_list() == ["authors", "authors"] and reference["kind"].to_list() == ["paper"] * 2
    data = [
        {"setting": s, "dataset": "lastfm", "model": m, "metric": k, "n_seeds": 3, "n_distinct": 3,
         "mean": mean, "std": 0.01, "mark": mark}
        for s, m, k, mean, mark in [
            ("authors", "TV-Diff", "recall@20", 0.27, "*"), ("authors", "TV-Diff", "ndcg@20", 0.25, ""),
            ("authors", "DiffRec", "recall@20", 0.26, ""), ("authors", "DiffRec", "ndcg@20", 0.26, ""),
            ("carved", "TV-Diff", "recall@20", 0.24, ""), ("carved", "TV-Diff", "ndcg@20", 0.23, "**"),
            ("carved", "DiffRec", "recall@20", 0.25, ""), ("carved", "DiffRec", "ndcg@20", 0.24, ""),
            ("authors", "TV-Diff (AR-GSP)", "recall@20", 0.20, ""), ("authors", "TV-Diff (AR-GSP)", "ndcg@20", 0.20, ""),
            ("authors", "TV-Diff (final conf.)", "recall@20", 0.21, ""), ("authors", "TV-Diff (final conf.)", "ndcg@20", 0.20, ""),
        ]
    ]
    metrics = pl.DataFrame([{**r, "seed": 1, "split": "test", "value": r["mean"]} for r in data]).select(tables.METRICS_COLUMNS)
    # variants of the paper's model: one whose numbers the paper's are (by its class's name), one in a
    # configuration the paper did not run (``paper: null``)
    summary = tables.summarize(metrics, reference, model_order=["DiffRec", "TV-Diff", "TV-Diff (final conf.)", "TV-Diff (AR-GSP)"],
                               table_metrics=("recall@20", "ndcg@20"),
                               paper_names={"TV-Diff (final conf.)": "TV-Diff", "TV-Diff (AR-GSP)": None})
    marks = {(r["setting"], r["model"], r["metric"]): r["mark"] for r in data}
    summary = summary.with_columns(pl.Series("mark", [marks[r] for r in summary.select("setting", "model", "metric").rows()]))
    runs = pl.DataFrame({"split_name": ["lastfm_authors", "lastfm_carved"], "setting": ["authors", "carved"],
                         "dataset": ["lastfm"] * 2, "model": ["TV-Diff"] * 2, "seed": [1, 1]})
    table = tables.own_split_table(summary, runs, "recall@20",
                                   dict.fromkeys(["DiffRec", "TV-Diff", "TV-Diff (final conf.)", "TV-Diff (AR-GSP)"], "diffusion"))
    md = tables.to_markdown(table)
    rows = _md_rows(md)
    ours = "our protocol (validation carved from train, validation-selected)"
    assert rows[0] == ["Dataset", "Model", "test-selected (authors' protocol) n", "test-selected (authors' protocol) R@20",
                       "test-selected (authors' protocol) N@20", "Paper R@20", "Paper N@20", "Δ paper R@20", "Δ paper N@20",
                       f"{ours} n", f"{ours} R@20", f"{ours} N@20"]
    assert rows[1] == ["lastfm", "DiffRec", "1", "<ins>0.2600</ins>", "**0.2600**", "–", "–", "–", "–",
                       "1", "**0.2500**", "**0.2400**"]
    assert rows[2] == ["", "TV-Diff", "1", "**0.2700**\\*", "<ins>0.2500</ins>", "0.3000", "0.2500",
                       "-10.0%", "+0.0%", "1", "<ins>0.2400</ins>", "<ins>0.2300</ins>\\*\\*"]
    assert rows[3] == ["", "TV-Diff (final conf.)", "1", "0.2100", "0.2000", "0.3000", "0.2500", "-30.0%", "-20.0%",
                       "–", "–", "–"]
    assert rows[4] == ["", "TV-Diff (AR-GSP)", "1", "0.2000", "0.2000", "–", "–", "–", "–", "–", "–", "–"]
    assert "best test recall@20 (test-selected, the authors' protocol" in md


def test_a_test_selected_setting_says_so():
    summary = _summary([("DiffRec", "recall@20", 1, 1, 0.2, None, "")]).with_columns(pl.lit("authors").alias("setting"))
    runs = pl.DataFrame({"split_name": ["x_authors"], "setting": ["authors"], "dataset": ["ml-1m"], "model": ["DiffRec"],
                         "seed": [1]})
    md = tables.to_markdown(tables.setting_table(summary, runs, "authors", "recall@20", {}, table_metrics=("recall@20",)))
    assert md.startswith("# Results: TV-Diff's datasets, test-selected (authors' protocol)")
    assert "Test split at the epoch with the best test recall@20 (test-selected" in md
    assert "best validation" not in md
