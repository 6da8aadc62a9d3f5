# Diffusion-recommender pipeline: download -> prepare -> embeddings -> clusters -> tune -> train -> aggregate.
# Thin entry point; the rules live in workflow/rules/. Every rule runs a
# `python -m pipeline <stage>` command, the same commands dvc.yaml runs.

import copy

from snakemake.utils import min_version, update_config, validate

from pipeline.config import SCHEMA_PATH, params_path, read_params

min_version("9.0")

PARAMS = params_path()  # $PIPELINE_PARAMS (unset or empty: params.yaml), exactly as the stages read it
# the params as the stages see them: an overlay (`extends:`) resolved onto its base; a YAML syntax
# error stops here with its file, line and column. Values given on the command line or by a profile
# (`--config`, e.g. workflow/profiles/slurm's training.device) win over the file, as with `configfile:`.
COMMAND_LINE = copy.deepcopy(config)
config.clear()
config.update(read_params(PARAMS))
update_config(config, COMMAND_LINE)
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
        # the synthetic presets listed in synthetic.build
        expand("data/raw/synthetic-{name}", name=SYNTHETIC_BUILD),
    default_target: True
