"""CDAE: Collaborative Denoising Auto-Encoder.

Reference: Yao Wu, Christopher DuBois, Alice X. Zheng, Martin Ester. "Collaborative Denoising
Auto-Encoders for Top-N Recommender Systems". WSDM 2016. The "CDAE" row of DiffRec's clean and
noisy tables (Wang et al., SIGIR 2023, arXiv:2304.04971). No code was released with the paper;
reference implementation: RecBole's ``recbole/model/general_recommender/cdae.py``.

Model (the paper's Section 4): the user's train row y_u is corrupted by mask-out/drop-out noise
(each entry zeroed with probability ``corruption``, survivors scaled by 1 / (1 - corruption), in
training only); one hidden layer with a user-specific input node,
    z_u = h(W^T y~_u + V_u + b),   h = ``hidden_activation`` (sigmoid in the paper),
and the reconstruction y^_u = f(W'^T z_u + b'). ``loss`` picks the pair the paper studies:
'bce' = sigmoid output f with the logistic loss, 'mse' = identity output with the square loss.
The loss is summed over all items of a user (no negative sampling: the whole row is dense in a
batch anyway) and averaged over the batch's users; the paper's L2 term
reg_weight / 2 (|W|^2 + |W'|^2 + |V|^2 + |b|^2 + |b'|^2) is scaled to that per-user average:
the shared weights' part divided by n_users, the user nodes' part as the batch mean of |V_u|^2,
so that over an epoch it is the paper's objective divided by the number of users. Adam.
Scores: the output pre-activation W'^T z_u + b' on the uncorrupted row (sigmoid is monotone).

With the speed switch on (``training.fast``) the encoder multiplies W^T by the kept entries of
the sparse input rows only, and the logistic loss is summed as softplus over the logits less the
logits at the row's nonzeros (``pipeline/models/fast/sparse_input.py``): the same function,
rounded differently, with the corruption drawn per nonzero entry.

Initialisation as RecBole's CDAE: Xavier-normal weights for the two dense layers and the user
embedding table (nn.init.xavier_normal_), zero biases.
Differences from the paper: the paper samples negatives (unobserved items) for efficiency and
trains with AdaGrad; we use every item of the row (as RecBole) and Adam. Differences from
RecBole: the paper's squared L2 instead of RecBole's L1 + (unsquared) L2 norm penalties.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.models import checks as c
from pipeline.models import fast
from pipeline.models.base import Recommender
from pipeline.models.fast import sparse_input
from pipeline.models.layers import dropout

ACTIVATIONS = {"sigmoid": torch.sigmoid, "relu": torch.relu, "tanh": torch.tanh, "identity": lambda x: x}
LOSSES = ("bce", "mse")



@dataclass(frozen=True)
class CDAEConfig:
    lr: float = 0.01
    reg_weight: float = 0.01  # the paper's lambda
    batch_size: int = 400
    epochs: int = 200  # a cap for the 2-core budget (see the baselines' note in params.yaml)
    hidden_size: int = 200  # K
    corruption: float = 0.5  # drop-out probability q of an input entry
    hidden_activation: str = "sigmoid"
    loss: str = "bce"  # 'bce' (sigmoid output, logistic loss) or 'mse' (identity output, square loss)

    def problems(self) -> list[tuple[str | tuple[str, ...], str]]:
        """(key, message) for every impossible value (types are checked before)."""
        return [
            *c.positive(self, "lr"),
            *c.non_negative(self, "reg_weight"),
            *c.counts(self, "batch_size", "epochs", "hidden_size"),
            *c.fractions(self, "corruption"),
            *c.one_of(self, "hidden_activation", sorted(ACTIVATIONS)),
            *c.one_of(self, "loss", LOSSES),
        ]


class CDAE(Recommender, key="cdae"):
    Config = CDAEConfig
    display_name = "CDAE"
    family = "generative"  # the tables' row group: classic, generative or diffusion

    def __init__(self, config: CDAEConfig, n_users: int, n_items: int, **side):
        super().__init__()  # side inputs (data, clusters) are not used
        self.config = config
        self.n_users, self.n_items = n_users, n_items
        self.encoder = nn.Linear(n_items, config.hidden_size)  # W, b
        self.user_embedding = nn.Embedding(n_users, config.hidden_size)  # V
        self.decoder = nn.Linear(config.hidden_size, n_items)  # W', b'
        for weight in (self.encoder.weight, self.user_embedding.weight, self.decoder.weight):
            nn.init.xavier_normal_(weight)
        nn.init.zeros_(self.encoder.bias)
        nn.init.zeros_(self.decoder.bias)
        self._activation = ACTIVATIONS[config.hidden_activation]

    # ---- the model contract ------------------------------------------------------------

    def optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.config.lr, fused=fast.fused_optimizer())

    def loss(self, rows: torch.Tensor, users: np.ndarray) -> torch.Tensor:
        nodes = self.user_embedding(self._user_index(users))  # V_u, looked up once for the output and the L2 term
        if fast.enabled() and self.config.loss == "bce":  # the rows' nonzeros serve the encoder and the loss
            entries = sparse_input.nonzero_entries(rows)
            out = self.forward(rows, nodes, entries)
            per_user_mean = sparse_input.logistic_loss_sum(out, entries) / rows.shape[0]
        else:
            out = self.forward(rows, nodes)
            if self.config.loss == "bce":
                per_user = F.binary_cross_entropy_with_logits(out, rows, reduction="none").sum(1)
            else:
                per_user = (out - rows).pow(2).sum(1)
            per_user_mean = per_user.mean()
        shared = sum(p.pow(2).sum() for p in (self.encoder.weight, self.encoder.bias, self.decoder.weight, self.decoder.bias))
        user_nodes = nodes.pow(2).sum(1).mean()
        reg = 0.5 * self.config.reg_weight * (shared / self.n_users + user_nodes)
        return per_user_mean + reg

    @torch.no_grad()
    def scores(self, rows: torch.Tensor, users: np.ndarray) -> torch.Tensor:
        return self.forward(rows, self.user_embedding(self._user_index(users)))


    # ---- pieces ------------------------------------------------------------------------
    def forward(self, rows: torch.Tensor, nodes: torch.Tensor, entries: sparse_input.Entries | None = None) -> torch.Tensor:
        """Output pre-activations (batch, n_items) of the rows and their users' input nodes V_u
        (batch, hidden_size); input corruption only in training mode.
        ``entries``: the fast path's nonzero entries of ``rows``, if the caller has them."""
        if fast.enabled():  # the encoder's product over the kept entries only (pipeline/models/fast/sparse_input.py)
            encoded = sparse_input.first_layer(rows, self.encoder, self.config.corruption if self.training else 0.0,
                                               normalize=False, entries=entries)
        else:
            encoded = self.encoder(dropout(rows, self.config.corruption, self.training))
        hidden = self._activation(encoded + nodes)
        return self.decoder(hidden)

    def _user_index(self, users: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.asarray(users), dtype=torch.long, device=self.user_embedding.weight.device)
