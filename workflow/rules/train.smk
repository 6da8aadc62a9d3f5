def train_command(w):
    clusters = f" --clusters data/clusters/{w.split}" if needs_clusters(w.model) else ""
    return (
        f"python -m pipeline train --split {w.split} --model {w.model} --seed {w.seed}"
        f" --data data/prepared/{w.split}{clusters} --out runs/{w.split}/{w.model}/seed{w.seed}"
        f" --log logs/train/{w.split}/{w.model}/seed{w.seed}.log"
    )


rule train:
    input:
        table="data/prepared/{split}/interactions.parquet",
        stats="data/prepared/{split}/stats.json",
        clusters=lambda w: (
            expand("data/clusters/{split}/{source}/clusters.parquet", split=w.split, source=EMBEDDINGS)
            if needs_clusters(w.model) else []
        ),
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
        cmd=train_command,
    log:
        "logs/train/{split}/{model}/seed{seed}.log",
    threads: config["training"]["threads"]
    resources:
        mem_mb=4000,
    shell:
        "{params.cmd}"
