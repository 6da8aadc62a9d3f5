# Synthetic raw data, one job per preset of params.yaml `synthetic.presets`; the default target
# builds those listed in `synthetic.build` (dvc.yaml: stage synthesize, foreach over the same
# list). A split may use `source: synthetic-<preset>`; its prepare job then reads
# data/raw/synthetic-<preset>, which this rule writes. benchmarks/bench_scale.py generates its
# presets in memory (pipeline.data.synthetic.synthetic_matrix) instead.

import re

SYNTHETIC_PRESETS = list((config.get("synthetic") or {}).get("presets") or {})
SYNTHETIC_BUILD = list((config.get("synthetic") or {}).get("build") or [])


rule synthesize:
    input:
        code=code("synthesize"),
    output:
        directory("data/raw/synthetic-{name}"),
    params:
        preset=lambda w: config["synthetic"]["presets"][w.name],
    log:
        "logs/synthesize/{name}.log",
    wildcard_constraints:
        name="|".join(re.escape(n) for n in SYNTHETIC_PRESETS) or "(?!)",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    shell:
        "python -m pipeline synthesize --name {wildcards.name} --out data/raw/synthetic-{wildcards.name} --log {log}"


# data/raw/synthetic-<preset> also matches the download rule's data/raw/{source}
ruleorder: synthesize > download
