"""MultiVAE: variational autoencoder with a multinomial likelihood and KL annealing (Mult-VAE^PR).

Reference: Dawen Liang, Rahul G. Krishnan, Matthew D. Hoffman, Tony Jebara. "Variational
Autoencoders for Collaborative Filtering". WWW 2018. arXiv:1802.05814.
Released code: github.com/dawenl/vae_cf (``VAE_ML20M_WWW2018.ipynb``, class ``MultiVAE``); the
"MultiVAE" row of DiffRec's clean and noisy tables (Wang et al., SIGIR 2023, arXiv:2304.04971).

Model (as the released ``q_graph`` / ``p_graph``): the train row x is L2-normalised, then input
dropout (training only); encoder items -> ... -> 2 * latent with tanh between layers, whose
output is split into mu and logvar; z = mu + eps * exp(logvar / 2) in training, z = mu in
evaluation; decoder latent -> ... -> items with tanh between layers (logits). ``dims`` as in
:mod:`pipeline.models.multidae`: ``[200, 600]`` = items -> 600 -> (mu, logvar) 200 -> 600 -> items.

Loss = multinomial NLL (``multinomial_nll``, target the clean row) + beta * KL(q(z|x) || N(0, I))
(summed over latent units, averaged over users) + reg_weight * sum of squared weight matrices.
KL annealing as the released training loop: beta = min(anneal_cap, batches_done /
total_anneal_steps) for the batch after ``batches_done`` training batches (beta = anneal_cap when
total_anneal_steps is 0). The batch counter is a registered buffer (``batches_seen``), so a run
resumed from a checkpoint anneals exactly like an uninterrupted one. Adam.
Scores: the decoder's logits at z = mu for the clean (undropped) row.
With the speed switch on, the encoder's first layer and Adam take MultiDAE's fast path
(``input_stack``, ``pipeline/models/fast/sparse_input.py``).

Initialisation (DiffRec's ``xavier_normal_``, as in the common PyTorch port of vae_cf): weights
N(0, 2 / (fan_in + fan_out)), biases N(0, 0.001^2); the TensorFlow original draws Glorot-uniform
weights (the same variance) and truncated-normal biases (std 0.001).
Differences from the released code: the dropout mask comes from ``torch.rand`` (same
distribution as ``tf.nn.dropout``); batches, epochs and early stopping (valid Recall@20 instead
of NDCG@100) are the project's shared protocol.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from pipeline.models import fast
from pipeline.models.fast import sparse_input
from pipeline.models.multidae import MultiDAE, MultiDAEConfig, dense_stack, input_stack, multinomial_nll, run_stack


@dataclass(frozen=True)
class MultiVAEConfig(MultiDAEConfig):
    anneal_cap: float = 0.2  # the KL weight's ceiling (the paper's beta; 0.2 in the released code)
    # batches over which the KL weight rises from 0 to 1 (capped at anneal_cap); it counts batches
    # (12 per epoch on ML-1M): the released 200000 would keep the weight near 0 for a whole run
    total_anneal_steps: int = 20000

    def problems(self) -> list[tuple[str | tuple[str, ...], str]]:
        out = super().problems()
        if self.anneal_cap < 0:
            out.append(("anneal_cap", f"must be >= 0, got {self.anneal_cap}"))
        if not isinstance(self.total_anneal_steps, int) or self.total_anneal_steps < 0:
            out.append(("total_anneal_steps", f"must be an integer >= 0 (0 = no annealing), got {self.total_anneal_steps!r}"))
        return out


class MultiVAE(MultiDAE, key="multivae"):
    Config = MultiVAEConfig
    display_name = "MultiVAE"
    family = "generative"  # the tables' row group: classic, generative or diffusion

    def __init__(self, config: MultiVAEConfig, n_users: int, n_items: int, **side):
        torch.nn.Module.__init__(self)  # not MultiDAE's layers: an encoder and a decoder
        self.config = config
        self.n_users, self.n_items = n_users, n_items
        dims = [int(d) for d in config.dims]
        self.latent = dims[0]
        self.encoder = dense_stack([n_items, *dims[::-1][:-1], 2 * dims[0]])
        self.decoder = dense_stack([*dims, n_items])
        if fast.enabled():  # the first layer's weight column-major for its CSR products (fast/sparse_input.py)
            sparse_input.store_column_major(self.encoder[0])
        # training batches so far: drives the KL annealing (part of the state, so of a resume)
        self.register_buffer("batches_seen", torch.zeros((), dtype=torch.long))

    def loss(self, rows: torch.Tensor, users: np.ndarray | None = None) -> torch.Tensor:
        beta = self.kl_weight(int(self.batches_seen))
        mu, logvar = self.encode(rows)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if self.training else mu
        kl = (0.5 * (-logvar + logvar.exp() + mu.pow(2) - 1.0)).sum(1).mean()
        if self.training:
            with torch.no_grad():
                self.batches_seen += 1
        return multinomial_nll(run_stack(self.decoder, z), rows) + beta * kl + self.l2_penalty()

    @torch.no_grad()
    def scores(self, rows: torch.Tensor, users: np.ndarray | None = None) -> torch.Tensor:
        return self.forward(rows)

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        """Logits at z = mu (the evaluation path; training samples z in :meth:`loss`)."""
        return run_stack(self.decoder, self.encode(rows)[0])

    def encode(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, logvar), each (batch, latent); input dropout only in training mode."""
        h = input_stack(self.encoder, rows, self.config.dropout, self.training)
        return h[:, : self.latent], h[:, self.latent :]

    def kl_weight(self, batches_done: int) -> float:
        """beta for the batch after ``batches_done`` training batches (released training loop)."""
        cfg = self.config
        if cfg.total_anneal_steps > 0:
            return min(cfg.anneal_cap, batches_done / cfg.total_anneal_steps)
        return cfg.anneal_cap
