"""Model registry: params.yaml model name -> model class (each class carries its ``Config``).

Every module of this package is imported here, and each ``Recommender`` subclass declared with a
``key`` registers itself (``pipeline/models/base.py``): adding a model is adding its file.
"""

import importlib
import pkgutil

from pipeline.models.base import Recommender

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    importlib.import_module(f"{__name__}.{_module}")

MODELS: dict[str, type[Recommender]] = dict(sorted(Recommender.registry.items()))
