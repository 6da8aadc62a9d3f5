"""MultiDAE: denoising autoencoder with a multinomial likelihood (Mult-DAE).

Reference: Dawen Liang, Rahul G. Krishnan, Matthew D. Hoffman, Tony Jebara. "Variational
Autoencoders for Collaborative Filtering". WWW 2018. arXiv:1802.05814.
Released code: github.com/dawenl/vae_cf (``VAE_ML20M_WWW2018.ipynb``, class ``MultiDAE``); the
"MultiDAE" row of DiffRec's clean and noisy tables (Wang et al., SIGIR 2023, arXiv:2304.04971).

Model (as the released ``MultiDAE.forward_pass``): the train row x is L2-normalised, then input
dropout (training only), then a stack of dense layers items -> ... -> items with tanh between
layers (none after the last); the output is a row of logits. ``dims`` follows DiffRec's (and
vae_cf's ``p_dims``) convention: ``dims = [200, 600]`` means items -> 600 -> 200 -> 600 -> items,
``dims = [200]`` means items -> 200 -> items.
Loss = multinomial negative log-likelihood -sum_i x_i log softmax(logits)_i, averaged over the
batch's users, + reg_weight * sum of the squared weight matrices (the notebook's
``2 * l2_regularizer(lam)``, so reg_weight is its ``lam``; biases are not regularised); Adam.
Scores: the logits of the clean (undropped) row; dropout is off in evaluation mode.

With the speed switch on (``training.fast``) the first layer multiplies only the kept nonzero
entries of the sparse train row (``pipeline/models/fast/sparse_input.py``) and Adam is torch's
fused kernel: the same function, rounded differently, with the dropout drawn per nonzero entry.

Initialisation (DiffRec's ``xavier_normal_``, as in the common PyTorch port of vae_cf): weights
N(0, 2 / (fan_in + fan_out)), biases N(0, 0.001^2); the TensorFlow original draws Glorot-uniform
weights (the same variance) and truncated-normal biases (std 0.001).
Differences from the released code: the dropout mask comes from ``torch.rand`` (inverted
dropout, as the other models of the project) instead of TensorFlow's ``tf.nn.dropout`` (same
distribution); our batches, epochs and early stopping are the project's shared protocol.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.models import checks as c
from pipeline.models import fast
from pipeline.models.fast import sparse_input
from pipeline.models.layers import dropout, xavier_normal_
from pipeline.models.base import Recommender



@dataclass(frozen=True)
class MultiDAEConfig:
    lr: float = 0.001
    reg_weight: float = 0.0  # the released code's lam: + reg_weight * sum ||W||^2
    batch_size: int = 500
    epochs: int = 200  # a cap for the 2-core budget (see the baselines' note in params.yaml)
    # [latent, ..., widest]: vae_cf's dims [200, 600] = items -> 600 -> 200 -> 600 -> items
    dims: list = field(default_factory=lambda: [200, 600])
    dropout: float = 0.5  # on the L2-normalised input, training only

    def problems(self) -> list[tuple[str | tuple[str, ...], str]]:
        """(key or keys involved, message) for every impossible value (types are checked before)."""
        return [
            *c.positive(self, "lr"),
            *c.non_negative(self, "reg_weight"),
            *c.counts(self, "batch_size", "epochs"),
            *c.dims(self),
            *c.fractions(self, "dropout"),
        ]


def dense_stack(widths: list[int]) -> nn.ModuleList:
    """Linear layers widths[0] -> widths[1] -> ..., with the released vae_cf initialisation."""
    layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
    for layer in layers:
        xavier_normal_(layer)
    return layers


def run_stack(layers: nn.ModuleList, h: torch.Tensor) -> torch.Tensor:
    """tanh after every layer but the last."""
    for i, layer in enumerate(layers):
        h = layer(h)
        if i != len(layers) - 1:
            h = torch.tanh(h)
    return h


def dense_input_stack(layers: nn.ModuleList, rows: torch.Tensor, drop: float, training: bool) -> torch.Tensor:
    """``run_stack`` on the L2-normalised dense ``rows`` after input dropout (training only): the
    readable path, for any rows (MultiDAE++ trains on dense noised rows)."""
    return run_stack(layers, dropout(F.normalize(rows, dim=1), drop, training))


def input_stack(layers: nn.ModuleList, rows: torch.Tensor, drop: float, training: bool) -> torch.Tensor:
    """``run_stack`` on the L2-normalised train ``rows`` after input dropout (training only). With
    the speed switch on, the first layer multiplies only the rows' kept nonzero entries
    (``pipeline/models/fast/sparse_input.py``): the same function, rounded differently, the dropout
    drawn per nonzero entry."""
    if not fast.enabled():
        return dense_input_stack(layers, rows, drop, training)
    h = sparse_input.first_layer(rows, layers[0], drop if training else 0.0, normalize=True)
    return h if len(layers) == 1 else run_stack(layers[1:], torch.tanh(h))


def multinomial_nll(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """-sum_i target_i log softmax(logits)_i, averaged over the rows."""
    return -(F.log_softmax(logits, dim=1) * target).sum(1).mean()


class MultiDAE(Recommender, key="multidae"):
    Config = MultiDAEConfig
    display_name = "MultiDAE"
    family = "generative"  # the tables' row group: classic, generative or diffusion
    # the first layer's weight column-major on the fast path, for its CSR products on the sparse rows
    # (pipeline/models/fast/sparse_input.py)
    column_major_input = True

    def __init__(self, config: MultiDAEConfig, n_users: int, n_items: int, **side):
        super().__init__()  # side inputs (data, clusters) are not used
        self.config = config
        self.n_users, self.n_items = n_users, n_items
        dims = [int(d) for d in config.dims]
        widths = [n_items, *dims[::-1], *dims[1:], n_items]  # items -> encoder -> latent -> decoder -> items
        self.layers = dense_stack(widths)
        if fast.enabled() and self.column_major_input:
            sparse_input.store_column_major(self.layers[0])

    # ---- the model contract ------------------------------------------------------------

    def optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.config.lr, fused=fast.fused_optimizer())

    def loss(self, rows: torch.Tensor, users: np.ndarray | None = None) -> torch.Tensor:
        return multinomial_nll(self.forward(rows), rows) + self.l2_penalty()

    @torch.no_grad()
    def scores(self, rows: torch.Tensor, users: np.ndarray | None = None) -> torch.Tensor:
        return self.forward(rows)


    # ---- pieces ------------------------------------------------------------------------
    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        """Logits (batch, n_items) of a batch of train rows; input dropout only in training mode."""
        return input_stack(self.layers, rows, self.config.dropout, self.training)

    def l2_penalty(self) -> torch.Tensor:
        """reg_weight * sum of squared weight matrices (biases excluded), as the released code."""
        weights = [m.weight for m in self.modules() if isinstance(m, nn.Linear)]
        if self.config.reg_weight == 0.0:
            return weights[0].new_zeros(())
        return self.config.reg_weight * sum(w.pow(2).sum() for w in weights)
