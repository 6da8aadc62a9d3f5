rule prepare:
    input:
        raw=lambda w: f"data/raw/{config['splits'][w.split]['source']}",
        code=code("prepare"),
    output:
        table="data/prepared/{split}/interactions.parquet",
        stats="data/prepared/{split}/stats.json",
    params:
        split=lambda w: config["splits"][w.split],
        protocol=config["protocol"],
    log:
        "logs/prepare/{split}.log",
    threads: 1
    resources:
        mem_mb=MEM_MB["prepare"],
        runtime=60,
    shell:
        "python -m pipeline prepare --split {wildcards.split} --raw {input.raw} --out data/prepared/{wildcards.split} --log {log}"
