"""Paired significance tests against the reference model: the test itself on hand-computed
cases, the per-user seed averaging, significance.csv, and the marks in the tables."""

from __future__ import annotations

import json
import re
import math

import numpy as np
import polars as pl
import pytest

from pipeline.reporting import significance as sig
from pipeline.reporting import tables
from pipeline.stages.aggregate import main

# --------------------------------------------------------------------------------------------
# The test statistic and p-value


def test_exact_all_positive():
    # 5 positive differences, no ties: W- = 0; of the 2^5 sign patterns only "all +" and
    # "all -" are as extreme, so p = 2 / 32.
    statistic, p, n = sig.wilcoxon(np.array([1.0, 2, 3, 4, 5]), np.zeros(5))
    assert (statistic, n) == (0.0, 5)
    assert p == pytest.approx(2 / 32, rel=1e-12)


def test_exact_one_negative():
    # differences 1, -2, 3, 4, 5, 6: W- = 2 (the rank of |-2|); sign patterns with W- <= 2 are
    # {}, {1}, {2}: 3 of 64, two-sided p = 2 * 3 / 64.
    statistic, p, n = sig.wilcoxon(np.array([1.0, -2, 3, 4, 5, 6]), np.zeros(6))
    assert (statistic, n) == (2.0, 6)
    assert p == pytest.approx(6 / 64, rel=1e-12)


def test_zero_differences_dropped():
    # a zero difference is dropped (zero_method="wilcox"): the same p as the 5 non-zero ones
    statistic, p, n = sig.wilcoxon(np.array([0.5, 1, 2, 3, 4, 5]), np.array([0.5, 0, 0, 0, 0, 0]))
    assert (statistic, n) == (0.0, 5)
    assert p == pytest.approx(2 / 32, rel=1e-12)


def test_all_equal():
    assert sig.wilcoxon(np.array([0.1, 0.2]), np.array([0.1, 0.2])) == (0.0, 1.0, 0)


def test_normal_approximation_above_50():
    # 60 distinct positive differences: W+ = 60*61/2 = 1830, E = n(n+1)/4 = 915,
    # sd = sqrt(n(n+1)(2n+1)/24); no continuity correction; two-sided p = erfc(|z| / sqrt 2).
    n = 60
    statistic, p, nz = sig.wilcoxon(np.arange(1, n + 1) / 100, np.zeros(n))
    z = (n * (n + 1) / 2 - n * (n + 1) / 4) / math.sqrt(n * (n + 1) * (2 * n + 1) / 24)
    assert (statistic, nz) == (0.0, n)
    assert z == pytest.approx(6.7359, abs=1e-4)
    assert p == pytest.approx(math.erfc(z / math.sqrt(2)), rel=1e-9)


def test_symmetric_in_direction():
    x, y = np.array([0.3, 0.1, 0.5, 0.2, 0.9, 0.4, 0.8]), np.array([0.1, 0.2, 0.1, 0.1, 0.3, 0.35, 0.1])
    assert sig.wilcoxon(x, y)[1] == pytest.approx(sig.wilcoxon(y, x)[1], rel=1e-12)


@pytest.mark.parametrize(
    "p, text", [(0.0, "**"), (0.0099, "**"), (0.01, "*"), (0.0499, "*"), (0.05, ""), (0.7, ""), (None, ""), (math.nan, "")]
)
def test_mark(p, text):
    assert sig.mark(p) == text


def test_legend_levels():
    assert sig.legend_levels() == "** p < 0.01, * p < 0.05"


# --------------------------------------------------------------------------------------------
# Seed averaging and pairing


def _frame(rows):
    """(setting, model, seed, user, recall@20, ndcg@20) tuples -> a per-user frame on ml-1m."""
    return pl.DataFrame(
        [{"dataset": "ml-1m", "setting": s, "model": m, "seed": seed, "user": u, "recall@20": r, "ndcg@20": n}
         for s, m, seed, u, r, n in rows],
        schema={"dataset": pl.String, "setting": pl.String, "model": pl.String, "seed": pl.Int64, "user": pl.Int64,
                "recall@20": pl.Float64, "ndcg@20": pl.Float64},
    )


def test_averages_over_shared_seeds_only():
    # DiffRec has seeds 1, 2; X has 1, 2, 3 (seed 3 is huge and must be ignored).
    # X's per-user means over seeds 1, 2 minus DiffRec's: 0.1, 0.2, ..., 0.5 -> p = 2/32.
    rows = []
    for u in range(5):
        rows += [("clean", "DiffRec", 1, u, 0.1, 0.1), ("clean", "DiffRec", 2, u, 0.3, 0.1)]
        d = 0.1 * (u + 1)
        rows += [("clean", "X", 1, u, 0.2 + d - 0.05, 0.1), ("clean", "X", 2, u, 0.2 + d + 0.05, 0.1)]
        rows += [("clean", "X", 3, u, 100.0, 0.1)]
    table = sig.significance(_frame(rows), "DiffRec")
    assert table.columns == list(sig.COLUMNS)
    r20, n20 = table.row(0, named=True), table.row(1, named=True)
    assert (r20["metric"], r20["seeds"], r20["n_users"], r20["n_nonzero"]) == ("recall@20", "1 2", 5, 5)
    assert r20["p_value"] == pytest.approx(2 / 32, rel=1e-9) and r20["mark"] == ""
    assert r20["mean"] == pytest.approx(0.5) and r20["mean_reference"] == pytest.approx(0.2)
    assert r20["mean_diff"] == pytest.approx(0.3)
    # ndcg@20 identical for every user: nothing to rank
    assert (n20["metric"], n20["n_nonzero"], n20["p_value"], n20["statistic"], n20["mark"]) == ("ndcg@20", 0, 1.0, 0.0, "")


def test_a_deterministic_model_is_paired_with_the_reference_over_all_its_seeds():
    # E ran once (seed 1, deterministic); DiffRec's seeds 1, 2 average to 0.2 for every user.
    rows = []
    for u in range(5):
        rows += [("clean", "DiffRec", 1, u, 0.1, 0.1), ("clean", "DiffRec", 2, u, 0.3, 0.1)]
        rows += [("clean", "E", 1, u, 0.2 + 0.1 * (u + 1), 0.1)]
    table = sig.significance(_frame(rows), "DiffRec", deterministic={"E"})
    r20 = table.row(0, named=True)
    assert (r20["seeds"], r20["mean_reference"], r20["p_value"]) == ("1 2", pytest.approx(0.2), pytest.approx(2 / 32))
    # not declared deterministic: paired on the shared seed 1 only (DiffRec 0.1 for every user)
    assert sig.significance(_frame(rows), "DiffRec").row(0, named=True)["mean_reference"] == pytest.approx(0.1)


def test_a_deterministic_models_one_run_ties_with_reference_runs_of_the_same_value():
    # 0.1 averaged over three runs is 0.10000000000000002 in float64, not 0.1: a deterministic
    # model's one run is averaged over the reference's seeds as the reference is, so users whose
    # three DiffRec runs equal its value are zero differences, exactly as with three runs of it
    rows, thrice = [], []
    for u in range(6):
        value = 0.1 if u < 3 else 0.1 * u
        rows += [("clean", "DiffRec", s, u, value if u < 3 else 0.05 * s, 0.1) for s in (1, 2, 3)]
        rows += [("clean", "E", 1, u, value, 0.1)]
        thrice += [("clean", "E", s, u, value, 0.1) for s in (2, 3)]
    once = sig.significance(_frame(rows), "DiffRec", deterministic={"E"})
    assert once.row(0, named=True)["n_nonzero"] == 3  # users 0-2 tie
    assert once.equals(sig.significance(_frame(rows + thrice), "DiffRec", deterministic={"E"}))


def test_groups_without_reference_or_shared_seeds_are_skipped():
    rows = [("clean", "DiffRec", 1, 0, 0.1, 0.1), ("clean", "X", 2, 0, 0.2, 0.2),  # no shared seed
            ("noisy", "X", 1, 0, 0.2, 0.2), ("noisy", "Y", 1, 0, 0.3, 0.3)]  # no DiffRec in noisy
    assert sig.significance(_frame(rows), "DiffRec").height == 0


def test_different_users_rejected():
    rows = [("clean", "DiffRec", 1, 0, 0.1, 0.1), ("clean", "X", 1, 1, 0.2, 0.2)]
    with pytest.raises(ValueError, match="different users"):
        sig.significance(_frame(rows), "DiffRec")


def test_order_and_csv_roundtrip(tmp_path):
    rows = []
    for setting in ("temporal", "clean"):
        for model in ("Z", "A", "DiffRec"):
            for u in range(8):
                rows.append((setting, model, 1, u, 0.1 * u + (0.01 * (u + 1) if model != "DiffRec" else 0), 0.05 * u))
    table = sig.significance(_frame(rows), "DiffRec", model_order=["DiffRec", "Z"], setting_order=["clean", "temporal"])
    assert table.select("setting", "model", "metric").rows() == [
        (s, m, k) for s in ("clean", "temporal") for m in ("Z", "A") for k in ("recall@20", "ndcg@20")
    ]
    # 8 distinct positive differences -> exact p = 2 / 256 -> "**"; ndcg equal -> p = 1
    assert table.filter(pl.col("metric") == "recall@20")["p_value"].to_list() == pytest.approx([2 / 256] * 4, rel=1e-9)
    assert table.filter(pl.col("metric") == "recall@20")["mark"].to_list() == ["**"] * 4
    path = tmp_path / "significance.csv"
    path.write_text(sig.to_csv(table))
    assert sig.from_csv(path).equals(table)


# --------------------------------------------------------------------------------------------
# Through the aggregate stage: significance.csv, marks in md / tex / html / csv / metrics.json

SPLIT = {"ml-1m_temporal": {"dataset": "ml-1m", "setting": "temporal", "source": "test", "format": "diffrec"}}
# per-user test values: DiffRec's are `base`; T-DiffRec's seed means are base + D_RECALL / + D_NDCG
BASE = [0.10, 0.20, 0.30, 0.40, 0.50, 0.60]
D_RECALL = [0.01, 0.02, 0.03, 0.04, 0.05, 0.06]  # 6 positive: p = 2/64 = 0.03125 -> "*"
D_NDCG = [0.01, -0.02, 0.03, 0.04, 0.05, 0.06]  # W- = 2: p = 6/64 = 0.09375 -> no mark


def _write(runs, model, seed, recall, ndcg):
    folder = runs / "ml-1m_temporal" / model / f"seed{seed}"
    folder.mkdir(parents=True)
    test = {"recall@20": float(np.mean(recall)), "ndcg@20": float(np.mean(ndcg)), "recall@10": 0.1, "ndcg@10": 0.1}
    (folder / "metrics.json").write_text(json.dumps({
        "model": model, "split": "ml-1m_temporal", "seed": seed, "best_epoch": 5, "epochs_trained": 25,
        "n_parameters": 10, "valid": test, "test": test,
    }))
    pl.DataFrame({"epoch": [5, 10], "valid_recall@20": [0.1, 0.2]}).write_csv(folder / "history.csv")
    pl.DataFrame({"user": list(range(6)), "split": ["test"] * 6, "recall@20": recall, "ndcg@20": ndcg}).write_parquet(
        folder / "per_user.parquet"
    )


@pytest.fixture
def aggregated(tmp_path):
    runs = tmp_path / "runs"
    for seed in (1, 2):
        _write(runs, "diffrec", seed, BASE, BASE)
        jitter = 0.004 if seed == 1 else -0.004  # cancels in the seed mean
        _write(runs, "tdiffrec", seed, [b + d + jitter for b, d in zip(BASE, D_RECALL)],
               [b + d - jitter for b, d in zip(BASE, D_NDCG)])
    params = {
        "splits": SPLIT,
        "training": {"select_metric": "recall@20"},
        "experiments": [{"splits": list(SPLIT), "models": ["diffrec", "tdiffrec"], "seeds": [1, 2]}],
        "paper_results": None,
    }
    out = tmp_path / "results"
    main(params, runs, out)
    return out


def test_significance_csv(aggregated):
    table = sig.from_csv(aggregated / "significance.csv")
    assert table.select("setting", "model", "reference", "metric", "seeds", "n_users", "n_nonzero").rows() == [
        ("temporal", "T-DiffRec", "DiffRec", "recall@20", "1 2", 6, 6),
        ("temporal", "T-DiffRec", "DiffRec", "ndcg@20", "1 2", 6, 6),
    ]
    assert table["p_value"].to_list() == pytest.approx([2 / 64, 6 / 64], rel=1e-9)
    assert table["statistic"].to_list() == [0.0, 2.0]
    assert table["mark"].to_list() == ["*", ""]
    assert table["mean_diff"].to_list() == pytest.approx([np.mean(D_RECALL), np.mean(D_NDCG)], abs=1e-12)


def test_marks_in_tables(aggregated):
    md = (aggregated / "tables" / "temporal.md").read_text()
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in md.splitlines() if line.startswith("| ")]
    # means 0.35 + mean(D); std over the two seeds: |±0.004| * sqrt(2) = 0.0057; recall@10 ties (both bold)
    assert rows == [
        ["Group", "Model", "n", "R@10", "R@20", "N@10", "N@20"],
        ["diffusion", "DiffRec", "2", "**0.1000 ± 0.0000**", "<ins>0.3500 ± 0.0000</ins>", "**0.1000 ± 0.0000**",
         "<ins>0.3500 ± 0.0000</ins>"],
        ["", "T-DiffRec", "2", "**0.1000 ± 0.0000**", "**0.3850 ± 0.0057**\\*", "**0.1000 ± 0.0000**",
         "**0.3783 ± 0.0057**"],
    ]
    assert (
        "\\*\\* p < 0.01, \\* p < 0.05: two-sided Wilcoxon signed-rank test against DiffRec over the same 6 test "
        "users (R@20 and N@20 only;"
    ) in md

    tex = (aggregated / "tables" / "temporal.tex").read_text()
    assert "T-DiffRec & 2 & \\textbf{0.1000 $\\pm$ 0.0000} & \\textbf{0.3850 $\\pm$ 0.0057}$^{*}$ &" in tex

    page = (aggregated / "tables" / "temporal.html").read_text()
    assert "><strong>0.3850 ± 0.0057</strong><sup>*</sup></td>" in page
    assert "** p &lt; 0.01, * p &lt; 0.05: two-sided Wilcoxon" in page

    csv = pl.read_csv(aggregated / "tables" / "temporal.csv")
    tested = csv.filter(pl.col("tested_against").is_not_null())
    assert tested.select("model", "metric", "mark").rows() == [("T-DiffRec", "recall@20", "*"), ("T-DiffRec", "ndcg@20", "")]

    tree = json.loads((aggregated / "metrics.json").read_text())
    assert tree["temporal"]["ml-1m"]["T-DiffRec"]["recall@20"]["p_value"] == pytest.approx(2 / 64, rel=1e-9)
    assert "p_value" not in tree["temporal"]["ml-1m"]["DiffRec"]["recall@20"]


def test_fmt_p():
    assert [tables.fmt_p(p) for p in (0.03125, 0.001, 0.00099, 5.28e-7, None)] == ["0.031", "0.001", "9.9e-04", "5.3e-07", "–"]


def test_significance_page(aggregated):
    page = (aggregated / "significance.html").read_text()
    assert "Paired significance tests against DiffRec" in page and ">temporal</th>" in page
    cells = re.findall(r'<td[^>]*class="gt_row[^"]*"[^>]*>(.*?)</td>', page)
    assert cells[:11] == ["ml-1m", "recall@20", "1, 2", "6", "6", "0.3850", "0.3500", "+0.0350", "0", "0.031<sup>*</sup>",
                          "ml-1m"]
    assert re.findall(r'<th[^>]*class="gt_row[^"]*gt_stub[^"]*"[^>]*>(.*?)</th>', page) == ["T-DiffRec", "T-DiffRec"]


def test_legend_without_tests():
    empty = pl.DataFrame(schema=sig.SCHEMA)
    assert tables.significance_legend(empty, "temporal", "ml-100k", "DiffRec", ["T-DiffRec", "LT-DiffRec"]) == (
        "No significance marks: there are no DiffRec runs on ml-100k temporal to test against."
    )
    assert tables.significance_legend(None, "clean", "ml-1m", "DiffRec", ["DiffRec"]) == (
        "No significance marks: DiffRec (the reference) is the only model of this table."
    )
