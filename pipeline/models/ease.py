"""EASE: Embarrassingly Shallow Autoencoder, a closed-form item-item model.

Reference: Harald Steck. "Embarrassingly Shallow Autoencoders for Sparse Data". WWW 2019.
arXiv:1905.03375. Released code: the paper's Algorithm 1 (a few lines of NumPy), reproduced in
github.com/hasteck/EASE_WWW19 and RecBole's ``recbole/model/general_recommender/ease.py``.

Model: item-item weights B = argmin ||X - XB||^2 + lambda ||B||^2 subject to diag(B) = 0, with X
the binary train matrix (users x items). Closed form (Algorithm 1): G = X^T X + lambda I,
P = G^-1, B = -P / diag(P) column-wise, diag(B) = 0. Scores: x_u B for the user's train row.

As released, G and its inverse are computed in float64 (``numpy.linalg.inv``); B is kept in
float32 (the dtype every model scores in here), so a checkpoint holds n_items^2 float32 values.
Nothing is trained by gradient: ``trainable = False``, the shared trainer evaluates it once
(epoch 0), and its L2 weight ``reg_weight`` is chosen on validation by the tune stage like the
other baselines' hyperparameters. The result does not depend on the seed: ``deterministic``.
Differences from the release: none in the arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from pipeline.data.dataset import InteractionData
from pipeline.models import checks as c
from pipeline.models.base import Recommender


@dataclass(frozen=True)
class EASEConfig:
    reg_weight: float = 500.0  # lambda of the paper (its Algorithm 1 uses 500.0)

    def problems(self) -> list[tuple[str | tuple[str, ...], str]]:
        return c.positive(self, "reg_weight")


class EASE(Recommender, key="ease"):
    Config = EASEConfig
    display_name = "EASE"
    family = "classic"
    trainable = False  # closed form: the trainer evaluates it once (epoch 0)
    deterministic = True

    def __init__(self, config: EASEConfig, n_users: int, n_items: int, *, data: InteractionData | None = None, **side):
        super().__init__()  # other side inputs are not used
        data = self.given_data(data, n_users, n_items, needs="the train matrix")
        self.config = config
        self.n_items = n_items
        x = data.train.astype(np.float64)
        x.data[:] = 1.0
        gram = (x.T @ x).toarray()
        gram[np.diag_indices(n_items)] += config.reg_weight
        inverse = np.linalg.inv(gram)
        weights = inverse / (-np.diag(inverse))
        weights[np.diag_indices(n_items)] = 0.0
        self.register_buffer("weights", torch.from_numpy(weights.astype(np.float32)))

    @torch.no_grad()
    def scores(self, rows: torch.Tensor, users: np.ndarray) -> torch.Tensor:
        return rows @ self.weights
