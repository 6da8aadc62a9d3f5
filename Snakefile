# Diffusion-recommender pipeline: download -> prepare -> item embeddings -> clusters -> train -> aggregate.
# Thin entry point; the rules live in workflow/rules/. Every rule runs a
# `python -m pipeline <stage>` command, the same commands dvc.yaml runs.

from snakemake.utils import min_version, validate

from pipeline.config import SCHEMA_PATH, params_path, read_params

min_version("9.0")

PARAMS = params_path()  # $PIPELINE_PARAMS (unset or empty: params.yaml), exactly as the stages read it
# the params as the stages see them: an overlay (`extends:`) resolved onto its base; a YAML syntax
# error stops here with its file, line and column
config.update(read_params(PARAMS))
validate(config, str(SCHEMA_PATH))  # pipeline/params.schema.yaml, the schema load_params uses


include: "workflow/rules/common.smk"
include: "workflow/rules/download.smk"
include: "workflow/rules/prepare.smk"
include: "workflow/rules/embed.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/synthetic.smk"


rule all:
    input:
        rules.aggregate.output,
        # item clusters of every split and embedding source (dvc.yaml builds them all too)
        expand("data/clusters/{split}/{source}/clusters.parquet", split=list(config["splits"]), source=EMBEDDINGS),
        # HDRM's stage-1 hyperbolic embeddings where a model needs them (as in dvc.yaml)
        expand(f"{HYPERBOLIC_DIR}/user_emb.npy", split=HYPERBOLIC_SPLITS),
        # the synthetic presets listed in synthetic.build
        expand("data/raw/synthetic-{name}", name=SYNTHETIC_BUILD),
    default_target: True
