rule train:
    input:
        table="data/prepared/{split}/interactions.parquet",
        stats="data/prepared/{split}/stats.json",
        code=CODE["train"],
    output:
        metrics=f"{RUN_DIR}/metrics.json",
        history=f"{RUN_DIR}/history.csv",
        per_user=f"{RUN_DIR}/per_user.parquet",
        model=f"{RUN_DIR}/model.pt",
    params:
        hyper=lambda w: config["models"][w.model],
        training=config["training"],
        evaluation=config["evaluation"],
    log:
        "logs/train/{split}/{model}/seed{seed}.log",
    threads: config["training"]["threads"]
    resources:
        mem_mb=4000,
    shell:
        "python -m pipeline train --split {wildcards.split} --model {wildcards.model} --seed {wildcards.seed}"
        " --data data/prepared/{wildcards.split} --out runs/{wildcards.split}/{wildcards.model}/seed{wildcards.seed}"
        " --log {log}"
