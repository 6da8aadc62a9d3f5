"""HDRM: Hyperbolic Diffusion Recommender Model (stage 2, on frozen stage-1 embeddings).

Reference: Meng Yuan, Yutian Xiao, Wei Chen, Chu Zhao, Deqing Wang, Fuzhen Zhuang. "HDRM:
Hyperbolic Diffusion Recommender Model". WWW 2025. arXiv:2504.01541.
Released code: github.com/yuanmeng-cpu/HDRM (``model.py``, ``diffusion.py``, ``utils.py``,
``train_ml.py``); the 0.95 / 0.05 output mixing follows the authors' model as ported in
umsimonchen/TV-Diff (``model/graph/HDRM.py``).

Contract: the shared model contract (``pipeline/models/base.py``). The frozen stage-1
embeddings come by keyword: ``hyperbolic=`` a :class:`pipeline.models.lorentz.HyperbolicEmbeddings`
(``load_hyperbolic_embeddings(folder)`` of the HGCF stage's ``user_emb.npy`` / ``item_emb.npy``)
or a (users, items) pair of arrays, points of the hyperboloid; ``requires = {"hyperbolic"}`` tells
the train stage. ``data`` is accepted and not needed.

Model (curvature -1, geoopt's Lorentz maps, :mod:`pipeline.models.lorentz`):

* z_u = logmap0(user point), z_i = logmap0(item point): the stage-1 tangent vectors at the
  origin (the released code's propagated ``light_out``), frozen (non-persistent buffers);
* Gaussian diffusion (:class:`pipeline.models.diffusion.GaussianDiffusion`: linear-var schedule,
  beta_1 fixed to 1e-5, x0-prediction) in that tangent space, uniform timesteps;
* two denoisers (DiffRec's MLP with a condition): input [dropout(z_t), Linear(sinusoidal(t)),
  condition]; ``dims`` [200, 1100] means 2D+emb -> 1100 -> 200 -> 1100 -> D with ``act`` between
  layers; Xavier-normal weights, N(0, 0.001) biases; the user denoiser is conditioned on the
  positive item's z_i, the item denoiser on the user's z_u;
* training, per (user, positive, negative) pair with one shared t: z_t = q_sample(z_0, t, eps)
  for user and positive item, outputs mixed z^ = (1 - mix) z_0 + mix MLP(z_t, cond, t);
  loss = (1 - alpha) sum max(0, d^2(u^, i^+) - d^2(u^, i^-) + margin)
         + alpha sum (MSE(z_u, z^_u) + MSE(z_i, z^_i)) / 2,
  u^ = expmap0(z^_u), i^+ = expmap0(z^_i), i^- the frozen negative item point, d^2 clamped at 50;
* ``geometric_noise`` (an option, the released ``--restrict``; off by default, as in the
  released ML-1M script): eps' = sign(z_0) |eps| rescaled to mean(z_0) + std(z_0) eps', the
  statistics over the batch's rows;
* inference: x_T = q_sample(mean of the user's train-item z_i, T-1, eps), T reverse posterior-mean
  steps with the item denoiser conditioned on z_u (no sampling noise), then
  (1 - mix) z_u + mix x_0, mapped to the hyperboloid; every item scored by -d^2 in one matrix
  product per batch of users (:func:`pipeline.models.lorentz.pairwise_sqdist`);
* batches (``sampling``): ``users`` (default) groups of ``batch_size`` users with all their
  train pairs, one uniform negative each, drawn among the user's non-train items; ``triples``
  the released batches, ``batch_size`` (released: 20,000) user-uniform (user, positive,
  negative) triples (:func:`pipeline.models.layers.user_uniform_triples`), as many per epoch as
  there are train pairs (the released ``trainDataSize``); the loss sums over the batch's
  triples either way, as the released one does.

With the speed switch on (``training.fast``) the denoisers run through
``pipeline/models/fast/hdrm.py``: the same computation, bit for bit with ``sampling: users`` (the
committed runs), and with ``sampling: triples`` up to float rounding of the time embedding's
gradient (its first layer skips the input gradient nobody needs).

Differences from the released code, on purpose:

* ``sampling: users`` (the default, the committed runs) instead of the released user-uniform
  triples (``sampling: triples``); with ``triples``, users are drawn among those with train items
  (the released loop draws among all users and skips those without, a shorter epoch where they
  exist);
* the frozen embeddings are stage 1's final points, so the GCN depth is stage 1's ``n_layers``
  (the released model re-propagates its pre-trained ego embeddings with ``--layer``, the same
  depth for ML-1M);
* all T reverse steps always (the released ``sampling_steps`` equals T in its ML-1M script);
* vectorised scoring; no clamp of the evaluation distances (the released loop clamps at 50);
* a user without train items starts from the zero vector (the released mean of an empty set
  is NaN);
* with ``geometric_noise`` a batch of one row uses std 0 (torch.std of one row is NaN); at
  inference the statistics are those of the evaluation chunk of users, as in the released code
  (so scores then depend on the evaluator's batch size);
* the dropout mask comes from ``torch.rand`` as in DiffRec here (same distribution as
  ``nn.Dropout``); the time coordinate of the tangent vectors (0 at the origin) is diffused
  and denoised like the others, as released, and ignored by expmap0.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.data.dataset import InteractionData
from pipeline.models.lorentz import (
    SQDIST_CLAMP,
    HyperbolicEmbeddings,
    check_points,
    expmap0,
    logmap0,
    pairwise_sqdist,
    projx,
    sqdist,
)
from pipeline.models import checks as c
from pipeline.models import fast
from pipeline.models.fast import hdrm as fast_hdrm
from pipeline.models.layers import dropout, sample_pairs, timestep_embedding, triple_batches, xavier_normal_
from pipeline.models.diffusion import GaussianDiffusion
from pipeline.models.base import Recommender

ACTIVATIONS = {"relu": F.relu, "tanh": torch.tanh, "sigmoid": torch.sigmoid}


SAMPLINGS = ("users", "triples")


@dataclass(frozen=True)
class HDRMConfig:
    """HDRM's released ML-1M diffusion setting (T 50, scale 1e-5, min 1e-5, max 1e-4, alpha 0.05,
    margin 0.2, lr 1e-3) on smaller networks: the released 512-d embeddings and [200, 1100]
    denoisers cost about 10 TFLOP per epoch (one pass over ML-1M's 403k train pairs; first
    estimated at ~300 s per epoch on 2 cores, measured later at about 71 s), so the defaults are
    64-d stage-1 embeddings (HGCFConfig) and [200, 600] denoisers (~1.7 TFLOP per epoch), with the
    shared trainer's batches of 300 users (``sampling: users``). The committed runs use these
    defaults.

    ``epochs`` 20 is not a sizing-down: the released ML-1M script trains 10 epochs (evaluating
    every 5); the cap here is twice that (4 evaluations at ``training.eval_every`` 5), the best
    validation epoch kept as for every model.

    The released size and batching (with stage 1 at 512 coordinates, see HGCFConfig):
    ``dims: [200, 1100]``, ``sampling: triples``, ``batch_size: 20000``, ``epochs: 10``; params.yaml's
    ``hdrm-512`` runs it on ``hgcf-512``'s points (its ``embeddings``).

    ``sampling``: ``users`` = batches of ``batch_size`` users with all their train pairs, one
    uniform negative each; ``triples`` = the released batches of ``batch_size`` user-uniform
    (user, positive, negative) triples, as many per epoch as train pairs. ``geometric_noise``: the
    released ``--restrict`` option (the geometric-constraint noise; off in the released ML-1M
    script, off here by default)."""

    lr: float = 0.001
    weight_decay: float = 0.0
    batch_size: int = 300
    epochs: int = 20
    dims: list = field(default_factory=lambda: [200, 600])
    emb_size: int = 10
    dropout: float = 0.5
    act: str = "relu"
    steps: int = 50
    noise_scale: float = 1.0e-5
    noise_min: float = 1.0e-5
    noise_max: float = 1.0e-4
    alpha: float = 0.05
    margin: float = 0.2
    mix: float = 0.05
    geometric_noise: bool = False
    sampling: str = "users"

    def problems(self) -> list[tuple[str | tuple[str, ...], str]]:
        """(key or keys involved, message) for every impossible value (types are checked before)."""
        return [
            *c.positive(self, "lr"),
            *c.non_negative(self, "weight_decay"),
            *c.counts(self, "batch_size", "epochs", "steps", "emb_size"),
            *c.dims(self),
            *c.fractions(self, "dropout"),
            *c.one_of(self, "act", sorted(ACTIVATIONS)),
            *c.positive(self, "noise_scale"),
            *c.noise_bounds(self),
            *c.unit_interval(self, "alpha"),
            *c.non_negative(self, "margin"),
            *c.unit_interval(self, "mix"),
            *c.one_of(self, "sampling", SAMPLINGS),
        ]


class ConditionalDenoiser(nn.Module):
    """HDRM's DNN: MLP over [dropout(z_t), Linear(sinusoidal(t)), condition]."""

    def __init__(self, size: int, dims: list[int], emb_size: int, dropout: float, act: str):
        super().__init__()
        out_dims = list(dims) + [size]
        in_dims = out_dims[::-1]
        in_widths = [2 * in_dims[0] + emb_size] + in_dims[1:]
        self.emb_size = emb_size
        self.dropout = dropout
        self.act = ACTIVATIONS[act]
        self.act_name = act
        self.emb_layer = nn.Linear(emb_size, emb_size)
        self.in_layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(in_widths[:-1], in_widths[1:]))
        self.out_layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(out_dims[:-1], out_dims[1:]))
        for layer in [*self.in_layers, *self.out_layers, self.emb_layer]:
            xavier_normal_(layer)

    def forward(self, z_t: torch.Tensor, cond: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        emb = self.emb_layer(timestep_embedding(t, self.emb_size).to(z_t.dtype))
        h = torch.cat([self._drop(z_t), emb, cond], dim=-1)
        for layer in self.in_layers:
            h = self.act(layer(h))
        for i, layer in enumerate(self.out_layers):
            h = layer(h)
            if i != len(self.out_layers) - 1:
                h = self.act(h)
        return h

    def _drop(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.dropout, self.training)


def geometric_noise(noise: torch.Tensor, z0: torch.Tensor) -> torch.Tensor:
    """HDRM's geometric constraint: mean(z0) + std(z0) * sign(z0) |noise|, statistics over rows."""
    mu = z0.mean(dim=0)
    sigma = z0.std(dim=0) if z0.shape[0] > 1 else torch.zeros_like(mu)
    return mu + sigma * (torch.sign(z0) * noise.abs())


def _as_points(value) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(value, HyperbolicEmbeddings):
        return value.users, value.items
    if isinstance(value, (tuple, list)) and len(value) == 2:
        users, items = value
        as_np = lambda a: a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)  # noqa: E731
        return as_np(users), as_np(items)
    raise TypeError(f"hyperbolic= must be HyperbolicEmbeddings or a (users, items) pair, got {type(value).__name__}")


class HDRM(Recommender, key="hdrm"):
    Config = HDRMConfig
    display_name = "HDRM"
    family = "diffusion"  # the tables' row group: classic, generative or diffusion
    requires = frozenset({"hyperbolic"})  # takes hyperbolic=load_hyperbolic_embeddings(<stage-1 folder>)
    samples_when_scoring = True  # inference starts from q_sample(..., eps), as released

    def __init__(self, config: HDRMConfig, n_users: int, n_items: int, *, data: InteractionData | None = None,
                 hyperbolic=None, **side):
        super().__init__()  # data and other side inputs are not used
        if hyperbolic is None:
            raise ValueError(
                "HDRM needs the stage-1 hyperbolic embeddings: pass "
                "hyperbolic=pipeline.models.lorentz.load_hyperbolic_embeddings(<folder with user_emb.npy, item_emb.npy>)"
            )
        users, items = _as_points(hyperbolic)
        check_points("hyperbolic.users", users, n_users)
        check_points("hyperbolic.items", items, n_items)
        if users.shape[1] != items.shape[1]:
            raise ValueError(f"hyperbolic: user and item embeddings differ in size ({users.shape[1]} vs {items.shape[1]})")
        self.config = config
        self.n_users, self.n_items = n_users, n_items
        item_points = projx(torch.from_numpy(np.ascontiguousarray(items, dtype=np.float32)))
        user_points = projx(torch.from_numpy(np.ascontiguousarray(users, dtype=np.float32)))
        # frozen stage-1 state: rebuilt from the embeddings, not part of the state dict
        self.register_buffer("item_points", item_points, persistent=False)
        self.register_buffer("user_tangent", logmap0(user_points), persistent=False)
        self.register_buffer("item_tangent", logmap0(item_points), persistent=False)
        self.diffusion = GaussianDiffusion(
            steps=config.steps, noise_scale=config.noise_scale, noise_min=config.noise_min, noise_max=config.noise_max,
            schedule="linear-var", max_beta=0.999, beta_fixed=True,
        )
        size = users.shape[1]
        self.user_denoiser = ConditionalDenoiser(size, list(config.dims), config.emb_size, config.dropout, config.act)
        self.item_denoiser = ConditionalDenoiser(size, list(config.dims), config.emb_size, config.dropout, config.act)

    # ------------------------------------------------------------------ contract

    def optimizer(self) -> torch.optim.Optimizer:
        # the released code has one Adam per denoiser with the same settings: the same updates
        params = [*self.user_denoiser.parameters(), *self.item_denoiser.parameters()]
        return torch.optim.Adam(params, lr=self.config.lr, weight_decay=self.config.weight_decay)

    def batches(self, matrix: sp.csr_matrix, generator: torch.Generator | None = None) -> Iterator[tuple]:
        """``sampling: users``: the contract's user batches; ``triples``: the released epoch of
        user-uniform triples, (rows of width 0, users, positives, negatives) per batch of
        ``batch_size`` (:func:`pipeline.models.layers.triple_batches`)."""
        if self.config.sampling == "triples":
            yield from triple_batches(matrix, self.config.batch_size, generator)
        else:
            yield from super().batches(matrix, generator)

    def loss(self, rows: torch.Tensor, users: np.ndarray, positives: torch.Tensor | None = None,
             negatives: torch.Tensor | None = None) -> torch.Tensor:
        """The loss of a batch: of every train pair of the rows' users with a drawn negative
        (``positives`` None), or of the given triples (users[k], positives[k], negatives[k])."""
        cfg = self.config
        if positives is None:
            b, pos, neg = sample_pairs(rows)
            if len(b) == 0:  # no train interaction in this batch: a zero that still backpropagates
                return sum(p.sum() for p in self.parameters()) * 0.0
            uid = torch.as_tensor(np.asarray(users), dtype=torch.long, device=b.device)[b]
        else:
            if len(positives) == 0:
                return sum(p.sum() for p in self.parameters()) * 0.0
            device = self.user_tangent.device
            uid = torch.as_tensor(np.asarray(users), dtype=torch.long, device=device)
            pos, neg = positives.to(device), negatives.to(device)
        z_u, z_i = self.user_tangent[uid], self.item_tangent[pos]
        t = torch.randint(0, cfg.steps, (len(uid),), device=uid.device)
        zt_u = self._q_sample(z_u, t)
        zt_i = self._q_sample(z_i, t)
        out_u = (1.0 - cfg.mix) * z_u + cfg.mix * self._denoise(self.user_denoiser, zt_u, z_i, t)
        out_i = (1.0 - cfg.mix) * z_i + cfg.mix * self._denoise(self.item_denoiser, zt_i, z_u, t)
        recon = (((z_u - out_u) ** 2).mean(1) + ((z_i - out_i) ** 2).mean(1)) / 2
        p_u = expmap0(out_u)
        d_pos = sqdist(p_u, expmap0(out_i)).clamp(max=SQDIST_CLAMP)
        d_neg = sqdist(p_u, self.item_points[neg]).clamp(max=SQDIST_CLAMP)
        ranking = torch.relu(d_pos - d_neg + cfg.margin)
        return (1.0 - cfg.alpha) * ranking.sum() + cfg.alpha * recon.sum()

    @torch.no_grad()
    def generate(self, rows: torch.Tensor, users: np.ndarray) -> torch.Tensor:
        """The users' generated points on the hyperboloid (B, D) (see the module docstring)."""
        cfg = self.config
        idx = torch.as_tensor(np.asarray(users), dtype=torch.long, device=self.user_tangent.device)
        z_u = self.user_tangent[idx]
        weights = rows.to(z_u.dtype)
        mean = (weights @ self.item_tangent) / weights.sum(1, keepdim=True).clamp(min=1.0)
        t_last = torch.full((len(idx),), cfg.steps - 1, dtype=torch.long, device=z_u.device)
        x = self._q_sample(mean, t_last)
        for t, c1, c2 in self.diffusion.reverse_coefficients():
            t_vec = torch.full((len(idx),), t, dtype=torch.long, device=z_u.device)
            x0 = self._denoise(self.item_denoiser, x, z_u, t_vec)
            x = float(np.float32(c1)) * x0 + float(np.float32(c2)) * x  # float32 coefficients, as the released code
        return expmap0((1.0 - cfg.mix) * z_u + cfg.mix * x)

    @torch.no_grad()
    def scores(self, rows: torch.Tensor, users: np.ndarray) -> torch.Tensor:
        return -pairwise_sqdist(self.generate(rows, users), self.item_points)

    @torch.no_grad()
    def scores_reference(self, rows: torch.Tensor, users: np.ndarray) -> torch.Tensor:
        """The released scoring loop: per user, geoopt's squared distance to every item."""
        points = self.generate(rows, users)
        out = torch.empty(len(points), self.n_items, dtype=points.dtype, device=points.device)
        for row, point in enumerate(points):
            out[row] = -sqdist(point.expand(self.n_items, -1), self.item_points)
        return out


    # ------------------------------------------------------------------ internals
    def _denoise(self, denoiser: ConditionalDenoiser, z_t: torch.Tensor, cond: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``denoiser(z_t, cond, t)``; with the speed switch on, the same through
        ``pipeline/models/fast/hdrm.py`` (its first layer without the input gradient only for the
        triple batches, see its docstring)."""
        if fast.enabled():
            return fast_hdrm.denoise(denoiser, z_t, cond, t, narrow_first_layer=self.config.sampling == "triples")
        return denoiser(z_t, cond, t)

    def _q_sample(self, z0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        noise = torch.randn_like(z0)
        if self.config.geometric_noise:
            noise = geometric_noise(noise, z0)
        return self.diffusion.q_sample(z0, t, noise)
