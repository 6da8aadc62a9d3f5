rule download:
    input:
        code=code("download"),
    output:
        directory("data/raw/{source}"),
    params:
        source=lambda w: config["sources"][w.source],
    log:
        "logs/download/{source}.log",
    threads: 1
    resources:
        mem_mb=1000,
        runtime=60,
    shell:
        "python -m pipeline download --source {wildcards.source} --out data/raw/{wildcards.source} --log {log}"
