rule aggregate:
    input:
        metrics=[f"runs/{split}/{model}/seed{seed}/metrics.json" for split, model, seed in RUNS],
        paper=config["paper_results"],
        code=CODE["aggregate"],
    output:
        metrics="results/metrics.csv",
        runs="results/runs.csv",
        tables=expand("results/tables/{setting}.{ext}", setting=SETTINGS, ext=["md", "csv", "tex"]),
    params:
        experiments=config["experiments"],
        splits=config["splits"],
        models=config["models"],
        select_metric=config["training"]["select_metric"],
    log:
        "logs/aggregate.log",
    resources:
        mem_mb=1000,
    shell:
        "python -m pipeline aggregate --runs runs --out results --log {log}"
