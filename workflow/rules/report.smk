rule aggregate:
    input:
        metrics=expand(f"{RUN_DIR}/metrics.json", split=EXPERIMENTS["splits"], model=EXPERIMENTS["models"], seed=EXPERIMENTS["seeds"]),
        paper=config["paper_results"],
        code=CODE["aggregate"],
    output:
        metrics="results/metrics.csv",
        runs="results/runs.csv",
        tables=expand("results/tables/{setting}.{ext}", setting=SETTINGS, ext=["md", "csv", "tex"]),
    params:
        experiments=EXPERIMENTS,
        splits=config["splits"],
        select_metric=config["training"]["select_metric"],
    log:
        "logs/aggregate.log",
    resources:
        mem_mb=1000,
    shell:
        "python -m pipeline aggregate --runs runs --out results --log {log}"
