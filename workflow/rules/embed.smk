rule embed:
    # an embedding model's vectors, exported from its train run (seed embeddings.seed): LightGCN's
    # (item vectors the cluster jobs read) or HGCF's (HDRM's stage-1 points); see pipeline/stages/embed.py
    input:
        inputs=lambda w: plan.embed_inputs(config, w.split, w.model),
        code=lambda w: code("embed", w.model),
    output:
        **{name.split(".")[0]: f"{plan.EMBED_DIR}/{name}" for name in plan.EMBED_FILES},
    params:
        read=lambda w: dotted(plan.embed_params(config, w.split, w.model)),
        cmd=lambda w: plan.embed_command(config, w.split, w.model),
    log:
        "logs/embed/{split}/{model}.log",
    wildcard_constraints:
        model="|".join(plan.embed_models(config)),
    priority: job_priority("embed")
    threads: 1
    resources:
        mem_mb=MEM_MB["train"],
        runtime=30,
    shell:
        "{params.cmd}"


rule import_embeddings:
    input:
        raw=lambda w: f"data/raw/{config['splits'][w.split]['source']}",
        stats="data/prepared/{split}/stats.json",
        code=code("import-embeddings"),
    output:
        embeddings="data/embeddings/{split}/released/item_emb.npy",
    params:
        source=lambda w: config["splits"][w.split]["source"],
    log:
        "logs/import_embeddings/{split}.log",
    priority: job_priority("import_embeddings")
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
        code=code("cluster"),
    output:
        clusters="data/clusters/{split}/{source}/clusters.parquet",
        sizes="data/clusters/{split}/{source}/sizes.json",
    params:
        clustering=config["clustering"],
    log:
        "logs/cluster/{split}_{source}.log",
    priority: job_priority("cluster")
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    shell:
        "python -m pipeline cluster --split {wildcards.split} --embeddings {input.embeddings}"
        " --out data/clusters/{wildcards.split}/{wildcards.source} --log {log}"
