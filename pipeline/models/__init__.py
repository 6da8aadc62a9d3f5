"""Model registry: params.yaml model name -> model class (each class carries its ``Config``)."""

from pipeline.models.diffrec import DiffRec
from pipeline.models.ldiffrec import LDiffRec, LTDiffRec
from pipeline.models.lightgcn import LightGCN
from pipeline.models.tdiffrec import TDiffRec

MODELS = {
    "diffrec": DiffRec,
    "ldiffrec": LDiffRec,
    "ltdiffrec": LTDiffRec,
    "lightgcn": LightGCN,
    "tdiffrec": TDiffRec,
}
