"""Model registry: params.yaml model name -> model class (each class carries its ``Config``).

Each ``Recommender`` subclass declared with a ``key`` registers itself when its module is
imported (``pipeline/models/base.py``): adding a model is adding its file. ``MODELS`` imports
every module of this package on first use (they import torch); importing this package alone
does not, so torch-free code (the planner, params validation) can use
``pipeline.models.declared``, which reads the same declarations from the files.
"""

import importlib
import pkgutil


def __getattr__(name: str):
    if name != "MODELS":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from pipeline.models.base import Recommender

    for module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
        importlib.import_module(f"{__name__}.{module}")
    models = dict(sorted(Recommender.registry.items()))
    globals()["MODELS"] = models
    return models
