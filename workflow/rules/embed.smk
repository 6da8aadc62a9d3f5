rule embed:
    input:
        table="data/prepared/{split}/interactions.parquet",
        stats="data/prepared/{split}/stats.json",
        code=CODE["embed"],
    output:
        embeddings="data/embeddings/{split}/lightgcn/item_emb.npy",
        metrics="data/embeddings/{split}/lightgcn/metrics.json",
        history="data/embeddings/{split}/lightgcn/history.csv",
        per_user="data/embeddings/{split}/lightgcn/per_user.parquet",
        model="data/embeddings/{split}/lightgcn/model.pt",
    params:
        hyper=config["models"]["lightgcn"],
        seed=config["embeddings"]["seed"],
    log:
        "logs/embed/{split}.log",
    threads: config["training"]["threads"]
    resources:
        mem_mb=MEM_MB["train"],
        gpu=GPUS,
        runtime=RUNTIME_MIN["train"],
    shell:
        "python -m pipeline embed --split {wildcards.split} --data data/prepared/{wildcards.split}"
        " --out data/embeddings/{wildcards.split}/lightgcn --log {log}"


rule embed_hyperbolic:
    # HDRM's stage 1: hyperbolic LightGCN (models.hgcf) -> user and item points (pipeline/hyperbolic.py)
    input:
        table="data/prepared/{split}/interactions.parquet",
        stats="data/prepared/{split}/stats.json",
        code=CODE["embed_hyperbolic"],
    output:
        user_emb=f"{HYPERBOLIC_DIR}/user_emb.npy",
        item_emb=f"{HYPERBOLIC_DIR}/item_emb.npy",
        metrics=f"{HYPERBOLIC_DIR}/metrics.json",
        history=f"{HYPERBOLIC_DIR}/history.csv",
        per_user=f"{HYPERBOLIC_DIR}/per_user.parquet",
        model=f"{HYPERBOLIC_DIR}/model.pt",
    params:
        hyper=config["models"][HYPERBOLIC_MODEL],
        seed=config["embeddings"]["seed"],
    log:
        "logs/embed_hyperbolic/{split}.log",
    threads: lambda w: run_threads(config, HYPERBOLIC_MODEL)
    resources:
        mem_mb=MEM_MB["train"],
        gpu=GPUS,
        runtime=RUNTIME_MIN["train"],
    shell:
        "python -m pipeline embed-hyperbolic --split {wildcards.split} --data data/prepared/{wildcards.split}"
        " --out data/embeddings/{wildcards.split}/hgcf --log {log}"


rule import_embeddings:
    input:
        raw=lambda w: f"data/raw/{config['splits'][w.split]['source']}",
        stats="data/prepared/{split}/stats.json",
        code=CODE["import_embeddings"],
    output:
        embeddings="data/embeddings/{split}/released/item_emb.npy",
    params:
        source=lambda w: config["splits"][w.split]["source"],
    log:
        "logs/import_embeddings/{split}.log",
    threads: 1
    resources:
        mem_mb=1000,
        runtime=30,
    shell:
        "python -m pipeline import-embeddings --split {wildcards.split} --raw {input.raw}"
        " --data data/prepared/{wildcards.split} --out data/embeddings/{wildcards.split}/released --log {log}"


rule cluster:
    input:
        embeddings="data/embeddings/{split}/{source}/item_emb.npy",
        code=CODE["cluster"],
    output:
        clusters="data/clusters/{split}/{source}/clusters.parquet",
        sizes="data/clusters/{split}/{source}/sizes.json",
    params:
        clustering=config["clustering"],
    log:
        "logs/cluster/{split}_{source}.log",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    shell:
        "python -m pipeline cluster --split {wildcards.split} --embeddings {input.embeddings}"
        " --out data/clusters/{wildcards.split}/{wildcards.source} --log {log}"
