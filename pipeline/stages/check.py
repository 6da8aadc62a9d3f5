"""The check command: params validated in full, every planned model config built and checked.

Planning and params validation (``pipeline.config.load_params``) import no torch: they check
names and types against what the model files declare. The models' own value checks
(``Config.problems()``) need the model classes; this command runs them for every planned job,
and Snakemake runs it before its first job.
"""

from __future__ import annotations

from pipeline.config import check_model_configs


def main(params: dict) -> None:
    print(f"params: {params['_path']} is valid; {check_model_configs(params)} model configs built and checked", flush=True)
