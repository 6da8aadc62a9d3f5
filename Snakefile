# Diffusion-recommender pipeline: download -> prepare -> train -> aggregate.
# Thin entry point; the rules live in workflow/rules/. Every rule runs a
# `python -m pipeline <stage>` command, the same commands dvc.yaml runs.
import os

from snakemake.utils import min_version, validate

min_version("9.0")


configfile: os.environ.get("PIPELINE_PARAMS", "params.yaml")


validate(config, "workflow/schemas/params.schema.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/download.smk"
include: "workflow/rules/prepare.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        rules.aggregate.output,
    default_target: True
