"""Model registry: params.yaml model name -> model class (each class carries its ``Config``)."""

from pipeline.models.diffrec import DiffRec

MODELS = {
    "diffrec": DiffRec,
}
