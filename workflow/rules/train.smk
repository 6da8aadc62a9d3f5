def train_command(w):
    clusters = f" --clusters data/clusters/{w.split}" if needs_clusters(w.model) else ""
    tuned = f" --tuned {TUNE_DIR.format(split=w.split, model=w.model)}/selected.json" if is_tuned(w.model) else ""
    hyperbolic = f" --hyperbolic {HYPERBOLIC_DIR.format(split=w.split)}" if needs_hyperbolic(w.model) else ""
    return (
        f"python -m pipeline train --split {w.split} --model {w.model} --seed {w.seed}"
        f" --data data/prepared/{w.split}{clusters}{tuned}{hyperbolic} --out runs/{w.split}/{w.model}/seed{w.seed}"
        f" --log logs/train/{w.split}/{w.model}/seed{w.seed}.log"
    )


def tune_command(w):
    clusters = f" --clusters data/clusters/{w.split}" if needs_clusters(w.model) else ""
    return (
        f"python -m pipeline tune --split {w.split} --model {w.model} --seed {TUNE_SEED[(w.split, w.model)]}"
        f" --data data/prepared/{w.split}{clusters}"
        f" --out {TUNE_DIR.format(split=w.split, model=w.model)} --log logs/tune/{w.split}/{w.model}.log"
    )


def hyperbolic_inputs(w):
    if not needs_hyperbolic(w.model):
        return []
    return [f"{HYPERBOLIC_DIR.format(split=w.split)}/{name}" for name in ("user_emb.npy", "item_emb.npy")]


def cluster_inputs(w):
    if not needs_clusters(w.model):
        return []
    return expand("data/clusters/{split}/{source}/clusters.parquet", split=w.split, source=EMBEDDINGS)


rule tune:
    # the baselines' hyperparameter grid on validation (first seed); see pipeline/tuning.py
    input:
        table="data/prepared/{split}/interactions.parquet",
        stats="data/prepared/{split}/stats.json",
        clusters=cluster_inputs,
        code=CODE["tune"],
    output:
        tuning=directory(TUNE_DIR),
    params:
        hyper=lambda w: config["models"][w.model],
        training=config["training"],
        evaluation=config["evaluation"],
        seed=lambda w: TUNE_SEED[(w.split, w.model)],
        cmd=tune_command,
    log:
        "logs/tune/{split}/{model}.log",
    threads: lambda w: run_threads(config, w.model)
    resources:
        mem_mb=MEM_MB["train"],
        gpu=GPUS,
        runtime=RUNTIME_MIN["tune"],
    shell:
        "{params.cmd}"


rule train:
    input:
        table="data/prepared/{split}/interactions.parquet",
        stats="data/prepared/{split}/stats.json",
        clusters=cluster_inputs,
        tuned=lambda w: [TUNE_DIR.format(split=w.split, model=w.model)] if is_tuned(w.model) else [],
        hyperbolic=hyperbolic_inputs,
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
    threads: lambda w: run_threads(config, w.model)
    resources:
        mem_mb=MEM_MB["train"],
        gpu=GPUS,
        runtime=RUNTIME_MIN["train"],
    shell:
        "{params.cmd}"
