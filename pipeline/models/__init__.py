"""Model registry: params.yaml model name -> model class (each class carries its ``Config``)."""

from pipeline.models.cdae import CDAE
from pipeline.models.codigem import CODIGEM
from pipeline.models.diffrec import DiffRec
from pipeline.models.hdrm import HDRM
from pipeline.models.hgcf import HGCF
from pipeline.models.ldiffrec import LDiffRec, LTDiffRec
from pipeline.models.lightgcn import LightGCN
from pipeline.models.mf import MF
from pipeline.models.mostpop import MostPop
from pipeline.models.multidae import MultiDAE
from pipeline.models.multidaepp import MultiDAEPP
from pipeline.models.multivae import MultiVAE
from pipeline.models.tdiffrec import TDiffRec
from pipeline.models.tvdiff import TVDiff

MODELS = {
    "diffrec": DiffRec,
    "ldiffrec": LDiffRec,
    "ltdiffrec": LTDiffRec,
    "lightgcn": LightGCN,
    "tdiffrec": TDiffRec,
    "mostpop": MostPop,
    "mf": MF,
    "cdae": CDAE,
    "multidae": MultiDAE,
    "multidaepp": MultiDAEPP,
    "multivae": MultiVAE,
    "codigem": CODIGEM,
    "tvdiff": TVDiff,
    "hgcf": HGCF,
    "hdrm": HDRM,
}
