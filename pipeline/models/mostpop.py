"""MostPop: rank items by their training popularity (the floor every model must clear).

Reference: the non-personalised popularity baseline of top-N recommendation, e.g.
Paolo Cremonesi, Yehuda Koren, Roberto Turrin. "Performance of Recommender Algorithms on Top-N
Recommendation Tasks". RecSys 2010 (RecBole's ``recbole/model/general_recommender/pop.py``).
Not a row of DiffRec's tables; it is here as the lower bound of every comparison.

Model: score(u, i) = number of users with (u', i) in the train split, the same vector for every
user. The train matrix is binary (``load_interactions``), so the score is an exact integer count
(float32 is exact up to 2^24). The evaluator masks the user's own train (and, for test, valid)
items as for every model; ties are broken by ``torch.topk`` as for every model.

It follows the shared model contract (``pipeline/models/base.py``) and declares
``trainable = False`` and ``deterministic = True``. There is nothing to fit, so the shared trainer evaluates it once, as
epoch 0, and writes the usual run folder (``metrics.json`` with best_epoch = epochs_trained = 0,
``history.csv`` with that one row, ``per_user.parquet``, ``model.pt`` holding the popularity
buffer); it defines no loss and its ``optimizer()`` is the contract's None. Its Config has no hyperparameters.
Differences from RecBole's Pop: none in the ranking (RecBole counts train interactions, too).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from pipeline.data.dataset import InteractionData
from pipeline.models.base import Recommender


@dataclass(frozen=True)
class MostPopConfig:
    """No hyperparameters."""

    def problems(self) -> list[tuple[str | tuple[str, ...], str]]:
        return []


class MostPop(Recommender, key="mostpop"):
    Config = MostPopConfig
    display_name = "MostPop"
    family = "classic"  # the tables' row group: classic, generative or diffusion
    trainable = False  # the trainer evaluates once (epoch 0) instead of training
    deterministic = True  # every seed gives the same result: the tables show one run

    def __init__(self, config: MostPopConfig, n_users: int, n_items: int, *, data: InteractionData | None = None, **side):
        super().__init__()  # other side inputs (clusters) are not used
        data = self.given_data(data, n_users, n_items, needs="the train matrix")
        self.config = config
        self.n_users, self.n_items = n_users, n_items
        train = sp.csr_matrix(data.train)
        counts = np.bincount(train.indices[train.data != 0], minlength=n_items)  # users per item
        # persistent: model.pt carries the popularity it ranked by
        self.register_buffer("popularity", torch.from_numpy(counts.astype(np.float32)))


    @torch.no_grad()
    def scores(self, rows: torch.Tensor | None, users: np.ndarray) -> torch.Tensor:
        return self.popularity.unsqueeze(0).expand(len(users), self.n_items).clone()

