# The aggregate stage: tables, significance tests, DVC metrics and figures from the runs.
# Outputs flagged report(...) go into `snakemake --report results/report.html`, with the
# captions in workflow/report/ (paths relative to this file).
import os

from pipeline.reporting.tables import has_own_split_table

report: "../report/workflow.rst"


# results/efficiency.json is a measurement written by benchmarks/bench_efficiency.py, not by
# the DAG: when present (it is committed) the aggregate stage also draws figures/efficiency.png.
EFFICIENCY = [f for f in ["results/efficiency.json"] if os.path.exists(f)]
REPORT_DIR = "../report"


def report_tables():
    # (a line may not start with `report(`: Snakemake would read it as the report: directive)
    pages = []
    for setting in SETTINGS:
        pages.append(report(
            f"results/tables/{setting}.html",
            caption=f"{REPORT_DIR}/table.rst",
            category="1. Tables",
            labels={"setting": setting, "content": "test metrics, significance vs DiffRec"},
        ))
    pages.append(report(
        "results/tables/reproduction.html",
        caption=f"{REPORT_DIR}/reproduction.rst",
        category="1. Tables",
        labels={"setting": "all", "content": "ours vs the paper and the authors' code"},
    ))
    return pages


def report_figures():
    figures = []
    for setting in SETTINGS:
        figures.append(report(
            f"results/figures/valid_curves_{setting}.png",
            caption=f"{REPORT_DIR}/valid_curves.rst",
            category="2. Figures",
            subcategory="validation curves",
            labels={"setting": setting, "figure": "validation Recall@20 per epoch"},
        ))
        figures.append(report(
            f"results/figures/test_bars_{setting}.png",
            caption=f"{REPORT_DIR}/test_bars.rst",
            category="2. Figures",
            subcategory="test metrics",
            labels={"setting": setting, "figure": "test Recall@20 and NDCG@20"},
        ))
    if EFFICIENCY:
        figures.append(report(
            "results/figures/efficiency.png",
            caption=f"{REPORT_DIR}/efficiency.rst",
            category="2. Figures",
            subcategory="efficiency",
            labels={"setting": "all", "figure": "DiffRec vs L-DiffRec parameters, memory, time"},
        ))
    return figures


rule significance:
    # the only step that reads the per-user tables (DVC outputs); its CSV is committed beside the
    # runs' metrics, so a fresh clone regenerates results/ from git alone (`make results`)
    input:
        per_user=plan.run_files(config, "per_user.parquet"),
        code=code("significance"),
    output:
        significance="runs/significance.csv",
    params:
        experiments=config["experiments"],
        splits=config["splits"],
        models=config["models"],
    log:
        "logs/significance.log",
    threads: 1
    resources:
        mem_mb=1000,
        runtime=30,
    shell:
        "python -m pipeline significance --runs runs --out {output.significance} --log {log}"


rule aggregate:
    input:
        metrics=plan.run_files(config, "metrics.json"),
        history=plan.run_files(config, "history.csv"),
        significance="runs/significance.csv",
        paper=local(config["paper_results"]),  # in the repository (the job's image), not in storage
        efficiency=[local(f) for f in EFFICIENCY],
        code=code("aggregate"),
    output:
        metrics="results/metrics.csv",
        runs="results/runs.csv",
        dvc_metrics="results/metrics.json",
        significance="results/significance.csv",
        significance_html=report(
            "results/significance.html",
            caption=f"{REPORT_DIR}/significance.rst",
            category="1. Tables",
            labels={"setting": "all", "content": "every paired test against DiffRec, with p-values"},
        ),
        tables=expand("results/tables/{setting}.{ext}", setting=SETTINGS, ext=["md", "csv", "tex"]),
        reproduction=expand("results/tables/reproduction.{ext}", ext=["md", "tex"]),
        own_split=expand("results/tables/tvdiff.{ext}", ext=["md", "tex", "html"]) if has_own_split_table(SETTINGS) else [],
        headline="results/tables/headline.md",
        html=report_tables(),
        figures=report_figures(),
    params:
        experiments=config["experiments"],
        splits=config["splits"],
        models=config["models"],
        select_metric=config["training"]["select_metric"],
        efficiency="".join(f" --efficiency {f}" for f in EFFICIENCY),
    log:
        "logs/aggregate.log",
    threads: 1
    resources:
        mem_mb=1000,
        runtime=30,
    shell:
        "python -m pipeline aggregate --runs runs --out results --significance {input.significance}{params.efficiency} --log {log}"
