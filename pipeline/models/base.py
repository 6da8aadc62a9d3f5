"""The model contract: what every model of the pipeline declares and does.

A model is a ``Recommender`` subclass in its own file under ``pipeline/models/``, registered by
the name params.yaml uses for it (``class DiffRec(Recommender, key="diffrec")``); writing the
file is what registers the model. The declarations below are literals in the class body:
planning and validation read them from the file without importing it
(``pipeline/models/declared.py``), so they need no torch.

Declared on the class (read without building a model):
    ``Config``          dataclass of its hyperparameters; ``problems()`` lists invalid values
    ``display_name``    the name the papers and the tables use
    ``family``          the tables' row group: "classic", "generative" or "diffusion"
    ``requires``        side inputs its runs need besides the split: "clusters" (item -> cluster
                        array of its item embeddings), "hyperbolic" (HDRM's stage-1 points)
    ``trainable``       False: nothing to fit, the trainer evaluates it once (epoch 0)
    ``deterministic``   True: every seed gives the same result (the tables show one run)
    ``samples_when_scoring``  True: ``scores`` draws from torch's RNG (as the released
                        inference does); scores are then a function of the state and the RNG
    ``uses_time_order`` True: its input depends on the order of a user's interactions (the
                        ``order`` column); False: a temporal split, whose rows equal its clean
                        split's, gives it the clean split's result, so the plan reuses that run

Built as ``Model(config, n_users, n_items, *, data=None, clusters=None, hyperbolic=None)``
(side inputs by keyword; a model ignores those it does not use), it provides:
    ``input_matrix(data)``   the CSR whose rows are its training and inference input (default:
                             the train matrix)
    ``batches(matrix)``      what one training epoch iterates over: tuples (rows, users, *extra)
                             of dense input rows, their users and anything else the model's
                             ``loss`` takes; the trainer moves the tensors to the device and calls
                             ``loss(rows, users, *extra)`` once per tuple, one optimizer step each.
                             Default: every user once, shuffled by ``torch.randperm`` on torch's
                             global generator, in batches of ``config.batch_size`` users (TV-Diff's
                             ``bpr`` form overrides it with (user, positive) pair batches; HGCF's
                             ``sampling: users`` and HDRM's ``sampling: triples`` with batches of
                             user-uniform (user, positive, negative) triples, whose ``rows`` have
                             width 0: their loss reads the triples in ``extra``, not the rows)
    ``loss(rows, users, *extra)``  scalar training loss of one batch (trainable models only)
    ``scores(rows, users)``  (required) full-ranking scores (batch, n_items), higher ranks first; called in
                             ``eval()`` mode, where dropout is off and, unless the class says
                             ``samples_when_scoring``, nothing is drawn from the RNG
    ``scoring_pass()``       a context for one evaluation pass (``scores`` over every chunk of
                             users) during which the weights do not change; a model that makes
                             operands for a whole pass (DiffRec's folded loop) makes them once in
                             it and frees them at its end. Default: nothing to do
    ``optimizer()``          the optimizer over its trainable parameters (trainable models)
    ``n_parameters()``       the parameter count the tables report (default: every parameter)
"""

from __future__ import annotations

import contextlib
from typing import ClassVar, ContextManager, Iterator

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from pipeline.data.dataset import dense_rows

FAMILIES = ("classic", "generative", "diffusion")
SIDE_INPUTS = ("clusters", "hyperbolic")


class Recommender(nn.Module):
    Config: ClassVar[type]
    display_name: ClassVar[str]
    family: ClassVar[str]
    requires: ClassVar[frozenset[str]] = frozenset()
    trainable: ClassVar[bool] = True
    deterministic: ClassVar[bool] = False
    samples_when_scoring: ClassVar[bool] = False
    uses_time_order: ClassVar[bool] = False

    registry: ClassVar[dict[str, type[Recommender]]] = {}
    key: ClassVar[str]

    def __init_subclass__(cls, key: str | None = None, **kwargs):
        super().__init_subclass__(**kwargs)
        if key is None:
            return
        if key in Recommender.registry:
            raise TypeError(f"model name {key!r} is taken by {Recommender.registry[key].__qualname__}")
        missing = [a for a in ("Config", "display_name", "family") if not hasattr(cls, a)]
        if missing:
            raise TypeError(f"{cls.__qualname__} (model {key!r}) does not declare {missing}")
        if cls.family not in FAMILIES:
            raise TypeError(f"{cls.__qualname__}.family is {cls.family!r}; allowed: {list(FAMILIES)}")
        unknown = sorted(set(cls.requires) - set(SIDE_INPUTS))
        if unknown:
            raise TypeError(f"{cls.__qualname__}.requires names unknown side inputs {unknown}; allowed: {list(SIDE_INPUTS)}")
        undefined = [m for m in ("scores", *(("loss", "optimizer") if cls.trainable else ()))
                     if getattr(cls, m, None) is getattr(Recommender, m, None)]
        if undefined:
            raise TypeError(f"{cls.__qualname__} (model {key!r}, trainable = {cls.trainable}) does not define {undefined}")
        cls.key = key
        Recommender.registry[key] = cls

    def input_matrix(self, data) -> sp.csr_matrix:
        return data.train

    @classmethod
    def given_data(cls, data, n_users: int, n_items: int, needs: str = "the training graph"):
        """``data`` (the ``InteractionData`` a model that reads the train part when it is built takes
        by keyword), checked: given, and of the model's size."""
        if data is None:
            raise ValueError(f"{cls.display_name} needs {needs}: pass data=InteractionData (build_model(..., data=data))")
        if (data.n_users, data.n_items) != (n_users, n_items):
            raise ValueError(f"{cls.display_name}: data has {data.n_users} users x {data.n_items} items, "
                             f"but the model was asked for {n_users} x {n_items}")
        return data

    def batches(self, matrix: sp.csr_matrix, generator: torch.Generator | None = None) -> Iterator[tuple]:
        """One epoch's training batches: (dense rows, users) of every user (row of ``matrix``)
        once, in the order of ``torch.randperm`` (``generator``: torch's global one when None), in
        batches of ``config.batch_size`` users, the last one smaller. Lazy: each batch is made
        dense when it is reached."""
        order = torch.randperm(matrix.shape[0], generator=generator).numpy()
        size = self.config.batch_size
        for start in range(0, len(order), size):
            users = order[start : start + size]
            yield dense_rows(matrix, users), users

    def loss(self, rows: torch.Tensor, users: np.ndarray | None = None) -> torch.Tensor:
        """Only trainable models have one (registration refuses a trainable model without it)."""
        raise RuntimeError(f"{type(self).__name__} is not trainable: it has no training loss")

    def scoring_pass(self) -> ContextManager[None]:
        """One evaluation pass over unchanging weights (see the module docstring): nothing to
        prepare by default."""
        return contextlib.nullcontext()

    def optimizer(self) -> torch.optim.Optimizer | None:
        """None: nothing to optimise (a trainable model defines its own; registration checks)."""
        return None

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
