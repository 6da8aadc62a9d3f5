"""Reference pipeline for diffusion recommender models.

Stages (each a ``python -m pipeline <stage>`` command, called by Snakemake and DVC alike):
download -> prepare -> train -> aggregate.
"""

__version__ = "0.1.0"
