"""CODIGEM: Collaborative Diffusion Generative Model.

Reference: Joojo Walker, Ting Zhong, Fengli Zhang, Qiang Gao, Fan Zhou. "Recommendation via
Collaborative Diffusion Generative Model". KSEM 2022, LNCS 13370, 593-605. Released code:
github.com/joojowalker/CODIGEM (``ddgm_model_rs.py``, ``main.py``), built on the DDGM example of
J. Tomczak's "Deep Generative Modeling". The "CODIGEM" row of DiffRec's clean and noisy tables
(Wang et al., SIGIR 2023, arXiv:2304.04971), whose authors remark that CODIGEM predicts with the
first of its stacked autoencoders only; the released ``evaluate`` confirms it (see "scores").

Model, as released (a DDPM with a fixed beta and one network per reverse step):
  * forward process: z_1 = sqrt(1 - beta) x + sqrt(beta) eps, z_{t+1} = sqrt(1 - beta) z_t +
    sqrt(beta) eps, t = 1 .. T-1 (``steps`` = T; eps ~ N(0, I), torch's global generator);
  * reverse networks: for t = 1 .. T-1 an MLP p_t maps z_{t+1} to (mu, logvar) of
    p(z_t | z_{t+1}) = N(mu, diag(exp(logvar))); a decoder MLP with a tanh output maps z_1 to
    mu_x, p(x | z_1) = N(mu_x, I). Every MLP is Linear(in, M), PReLU, then
    (hidden_layers - 1) x [Linear(M, M), PReLU], then Linear(M, out) (M = hidden_size; the
    release has 5 PReLU layers of 200 units, T = 3, beta = 1e-4, Adamax at lr 1e-3, batch 200);
  * loss = -ELBO, averaged over the batch's users:
        -log N(x; mu_x, I) + [log q(z_T | z_{T-1}) - log N(z_T; 0, I)]
        + sum_{t=1}^{T-1} [log q(z_t | z_{t-1}) - log p_t(z_t | z_{t+1})]   (z_0 = x),
    every term summed over items, one sample of the forward chain per user and batch;
  * scores: the decoder applied to z_1 of the train row, i.e. only the first autoencoder (the
    released ``evaluate`` runs the same forward pass and ranks mu_x); the reverse networks p_t
    never influence the ranking, they only shape the training objective. The decoder shares no
    parameter with them and Adamax is per-parameter, so the decoder's training depends on T only
    through the random stream: T (``steps``) changes the cost, not the model that ranks.

Initialisation as released: the first Linear layer of every reverse network gets weights and
biases N(0, P_INIT_STD^2); all other layers (the whole decoder included: the release's init loop
never matches the decoder's layers) keep PyTorch's default initialisation.

With the speed switch on (``training.fast``, ``pipeline/models/fast/codigem.py``) only the decoder
is trained: its weights, scores and metrics are the readable path's bit for bit, the reverse
networks stay at their initialisation and the loss reported is the decoder's term of the -ELBO.

Differences from the released code, on purpose:
  * inference uses the mean of q(z_1 | x), sqrt(1 - beta) x, instead of a fresh noise sample, so
    scores are a deterministic function of the train row (beta = 1e-4: noise std 0.01);
  * the KL terms pair each reverse network with the latent it predicts: the release (Tomczak's
    DDGM example) compares the prediction of z_{T-1-i} with z_i, and uses sqrt(1 - beta) z_t
    instead of sqrt(1 - beta) z_{t-1} as the mean of q(z_t | z_{t-1}); for T <= 2 the pairing is
    the same, the second change touches only a parameter-free term, and neither can change the
    scores (only the decoder ranks);
  * the released loop's KL annealing variable is overwritten with 1 (no annealing), as here;
  * batches, epochs and early stopping are the project's shared protocol.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from pipeline.models import checks as c
from pipeline.models import fast
from pipeline.models.base import Recommender
from pipeline.models.fast import codigem as fast_codigem
from pipeline.models.layers import LOG_2PI, log_unit_normal

P_INIT_STD = 1e-4  # released init of the reverse networks' first layer (weights and biases)



@dataclass(frozen=True)
class CODIGEMConfig:
    """The released CODIGEM settings (T = 3, 5 PReLU layers of 200, Adamax lr 1e-3, batch 200)."""

    lr: float = 0.001
    weight_decay: float = 0.0  # Adamax's (L2 added to the gradient); 0 in the release
    batch_size: int = 200
    epochs: int = 200  # a cap for the 2-core budget (see the baselines' note in params.yaml)
    steps: int = 3  # T: forward steps; T - 1 reverse networks plus the decoder
    beta: float = 1.0e-4  # the fixed variance of every forward step
    hidden_size: int = 200  # M
    hidden_layers: int = 5  # PReLU layers per network (5 in the release)

    def problems(self) -> list[tuple[str | tuple[str, ...], str]]:
        """(key, message) for every impossible value (types are checked before)."""
        out = [
            *c.positive(self, "lr"),
            *c.non_negative(self, "weight_decay"),
            *c.counts(self, "batch_size", "epochs", "steps", "hidden_size", "hidden_layers"),
        ]
        if not 0 < self.beta < 1:
            out.append(("beta", f"must be in (0, 1), got {self.beta}"))
        return out


def prelu_mlp(d_in: int, hidden: int, n_hidden: int, d_out: int) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Linear(d_in, hidden), nn.PReLU()]
    for _ in range(n_hidden - 1):
        layers += [nn.Linear(hidden, hidden), nn.PReLU()]
    layers.append(nn.Linear(hidden, d_out))
    return nn.Sequential(*layers)


def _squared_norm(x: torch.Tensor) -> torch.Tensor:
    """Row-wise sum of squares of a tensor that needs no gradient (no full-size temporary)."""
    return torch.linalg.vector_norm(x, dim=1).square()


class CODIGEM(Recommender, key="codigem"):
    Config = CODIGEMConfig
    display_name = "CODIGEM"
    family = "diffusion"  # the tables' row group: classic, generative or diffusion

    def __init__(self, config: CODIGEMConfig, n_users: int, n_items: int, **side):
        super().__init__()  # side inputs (data, clusters) are not used
        self.config = config
        self.n_users, self.n_items = n_users, n_items
        m, layers = config.hidden_size, config.hidden_layers
        # reverse_nets[t - 1] maps z_{t+1} to (mu, logvar) of z_t, t = 1 .. T-1
        self.reverse_nets = nn.ModuleList(prelu_mlp(n_items, m, layers, 2 * n_items) for _ in range(config.steps - 1))
        self.decoder = nn.Sequential(*prelu_mlp(n_items, m, layers, n_items), nn.Tanh())
        for net in self.reverse_nets:
            nn.init.normal_(net[0].weight, 0.0, P_INIT_STD)
            nn.init.normal_(net[0].bias, 0.0, P_INIT_STD)
        self.keep = math.sqrt(1.0 - config.beta)  # mean coefficient of every forward step
        self.spread = math.sqrt(config.beta)
        self.log_beta = math.log(config.beta)

    # ---- the model contract ------------------------------------------------------------

    def optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.Adamax(self.parameters(), lr=self.config.lr, weight_decay=self.config.weight_decay)

    def loss(self, rows: torch.Tensor, users: np.ndarray | None = None) -> torch.Tensor:
        steps, n = self.config.steps, rows.shape[1]
        if fast.enabled():  # the decoder's term alone, the same decoder bit for bit (pipeline/models/fast/codigem.py)
            return fast_codigem.decoder_loss(self.decoder, rows, steps, self.keep, self.spread)
        noise = []  # eps_1 .. eps_T
        zs = [rows]  # z_0 = x, then z_1 .. z_T
        for _ in range(steps):
            noise.append(torch.randn_like(rows))
            zs.append(torch.add(zs[-1] * self.keep, noise[-1], alpha=self.spread))
        # every log-density is summed over the n items; z_t - sqrt(1 - beta) z_{t-1} = sqrt(beta) eps_t, so
        # log q(z_t | z_{t-1}) = -n/2 (log 2 pi + log beta) - |eps_t|^2 / 2 exactly (no parameters involved)
        log_q = [-0.5 * n * (LOG_2PI + self.log_beta) - 0.5 * _squared_norm(e) for e in noise]
        reconstruction = log_unit_normal(rows, self.decoder(zs[1]))  # log N(x; mu_x, I)
        kl = log_q[steps - 1] - (-0.5 * n * LOG_2PI - 0.5 * _squared_norm(zs[steps]))  # q(z_T | z_T-1) vs N(0, I)
        for t in range(1, steps):
            mu, log_var = self.reverse_nets[t - 1](zs[t + 1]).chunk(2, dim=1)
            diff = zs[t] - mu
            log_p = -0.5 * n * LOG_2PI - 0.5 * (log_var + torch.exp(-log_var) * diff * diff).sum(1)
            kl = kl + log_q[t - 1] - log_p
        return -(reconstruction - kl).mean()

    @torch.no_grad()
    def scores(self, rows: torch.Tensor, users: np.ndarray | None = None) -> torch.Tensor:
        return self.decoder(self.keep * rows)  # mu_x at the mean of q(z_1 | x)

