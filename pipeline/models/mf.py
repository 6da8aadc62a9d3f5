"""MF: matrix factorisation trained with BPR (BPR-MF).

Reference: Steffen Rendle, Christoph Freudenthaler, Zeno Gantner, Lars Schmidt-Thieme.
"BPR: Bayesian Personalized Ranking from Implicit Feedback". UAI 2009. arXiv:1205.2618.
The "MF" row of DiffRec's clean and noisy tables (Wang et al., SIGIR 2023, arXiv:2304.04971).
Reference implementations: RecBole's ``recbole/model/general_recommender/bpr.py``; LightGCN's
released code (github.com/gusye1234/LightGCN-PyTorch) with 0 layers.

Model: user and item embeddings e_u, e_i (N(0, 0.1^2), LightGCN's ``INIT_STD``);
score(u, i) = <e_u, e_i>. Loss = mean over pairs of -log sigmoid(s(u, i+) - s(u, i-))
+ reg_weight * 1/2 (|e_u|^2 + |e_i+|^2 + |e_i-|^2) averaged over pairs; Adam.

This is exactly LightGCN (``pipeline/models/lightgcn.py``) with ``n_layers = 0``: the layer mean
of layer 0 alone is the ego embedding. So ``MF`` subclasses ``LightGCN`` and reuses its pair
and negative sampler (every train interaction of the batch's users is one pair, one negative
drawn uniformly among the user's non-train items, vectorised, torch's global generator), its
loss, scoring and parameter layout; the only override is :meth:`propagate`, which returns the
embedding tables directly (no concatenation, no graph product). With ``training.fast`` the loss
takes LightGCN's fast path for no layers (each pair's gradient added straight into the two tables'
rows, ``TableBPRLoss`` in ``pipeline/models/fast/lightgcn.py``) and Adam is torch's fused kernel
(LightGCN keeps the per-tensor one). The Config has no ``n_layers``
(a class constant 0). The parent still builds the (unused) normalised graph at construction.

Differences from the BPR paper / RecBole's BPR: Adam instead of SGD (LightGCN's and RecBole's
choice); batches are groups of users with all their pairs, not random (u, i, j) triples; the L2
term is on the batch's embeddings (LightGCN's form) rather than weight decay on all of them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

import torch

from pipeline.models.lightgcn import LightGCN, LightGCNConfig


@dataclass(frozen=True)
class MFConfig:
    emb_size: int = 64
    lr: float = 0.01  # from short runs (0.001 learns slowly); params.yaml's grid tries both
    weight_decay: float = 0.0
    reg_weight: float = 1.0e-4
    batch_size: int = 256
    epochs: int = 200  # a cap for the 2-core budget (see the baselines' note in params.yaml)

    n_layers: ClassVar[int] = 0  # BPR-MF = LightGCN without propagation (read by LightGCN's code)

    def problems(self) -> list[tuple[str | tuple[str, ...], str]]:
        """(key, message) for every impossible value (types are checked before): LightGCN's checks."""
        return LightGCNConfig(**dataclasses.asdict(self), n_layers=0).problems()


class MF(LightGCN, key="mf"):
    Config = MFConfig
    display_name = "MF"
    family = "classic"  # the tables' row group: classic, generative or diffusion

    def propagate(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The ego embeddings (users (U, d), items (I, d)): LightGCN's layer mean with 0 layers."""
        return self.user_embedding.weight, self.item_embedding.weight
