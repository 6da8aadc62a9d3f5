"""HGCF-style hyperbolic LightGCN: HDRM's stage 1 (the frozen embeddings its diffusion runs on).

References: Jianing Sun, Zhaoyue Cheng, Saba Zuberi, Felipe Pérez, Maksims Volkovs. "HGCF:
Hyperbolic Graph Convolution Networks for Collaborative Filtering". WWW 2021 (code:
layer6ai-labs/HGCF). Used as the first stage of Meng Yuan, Yutian Xiao, Wei Chen, Chu Zhao,
Deqing Wang, Fuzhen Zhuang. "HDRM: Hyperbolic Diffusion Recommender Model". WWW 2025,
arXiv:2504.01541 (code: yuanmeng-cpu/HDRM, ``model.py``'s ``LightGCN`` with a ``Hyperboloid``
manifold). The repository's HEAD ships no training code for this stage (``main.py`` loads
pre-trained weights), but its history does: the stage-1 code was committed and deleted the same
day (commit 2952fbd, folder ``hdrm/DDRM_LightGCN/``); its recipe is below.

Contract: the shared model contract (``pipeline/models/base.py``); the model needs the
training graph, so it takes ``data`` by keyword. The train stage trains it with the shared
trainer; :func:`pipeline.stages.embed.main` exports its final embeddings for HDRM.

Model (Lorentz model, curvature -1; every map is geoopt's, see :mod:`pipeline.models.lorentz`):

* ego embeddings: one point of the hyperboloid per user and item (``emb_size`` ambient
  coordinates), initialised as expmap0 of a uniform(-init_scale, init_scale) vector whose time
  coordinate is ignored (the released initialisation), kept as geoopt ``ManifoldParameter``s;
* propagation in the tangent space at the origin: h_0 = logmap0(proj(ego)),
  h_l = G h_{l-1} with G = D^-1 (A + I) (row-normalised, self-loops), final tangent vector
  sum_{l=1..L} h_l (layer 0 excluded, as HGCF's ``resSumGCN`` and HDRM do), final point
  expmap0(sum);
* score(u, i) = -d^2(u, i), the squared Lorentz distance;
* loss over (user, positive, negative) triples: sum max(0, d^2(u, i) - d^2(u, j) + margin), each
  d^2 clamped at 50 (HGCF). The triples (``sampling``): ``pairs`` (default) every train
  interaction (u, i) of the batch's users, with one negative j drawn uniformly among u's
  non-train items (:func:`pipeline.models.layers.sample_pairs`), batches of ``batch_size`` users
  (the shared trainer's protocol); ``users`` the released draw, user-uniform triples
  (:func:`pipeline.models.layers.user_uniform_triples`: a user uniformly, one of its train items,
  one uniform non-train item), as many per epoch as there are train pairs (the released
  ``trainDataSize``), in batches of ``batch_size`` triples;
* optimiser: Riemannian SGD with momentum and weight decay (geoopt's ``RiemannianSGD``; HGCF
  and HDRM use their own copy of the same algorithm: weight decay added to the Euclidean
  gradient, Riemannian gradient, exponential-map step, momentum transported along it).

The authors' recipe (stage-1 code in the HDRM repository's history; reference README, "HDRM as
released") and how to run it here:

==========================================  =================================  ===================
released                                    here                               default here
==========================================  =================================  ===================
512 coordinates (``--recdim 512``)          ``emb_size: 512``                  64
3 layers on ML-1M                           ``n_layers``                       3
Riemannian SGD lr 1e-3, momentum 0.95       ``lr``, ``momentum``               1e-3, 0.95
weight decay 1e-3                           ``weight_decay: 0.001``            0.005
user-uniform triples, trainDataSize/epoch   ``sampling: users``                pairs
batch 20,000 (the ML-1M checkpoint's name   ``batch_size: 20000`` (or 8192;    300 (users)
says 8,192)                                 triples with ``sampling: users``)
margin 0.2 in the code, 0.1 in the          ``margin``                         0.1
checkpoint's name
up to 1,000 epochs                          ``epochs``                         500
after epoch 30, stop when 6 evaluations     ``min_epochs: 30``, and the        min_epochs 0
pass without a better valid Recall@10       trainer's ``training.patience``,
                                            ``eval_every``, ``select_metric``
==========================================  =================================  ===================

The stop rule: ``min_epochs`` is this model's (the trainer does not stop a run before the end of
that epoch); the patience, evaluation period and selection metric are the shared training
settings of params.yaml (``training``, per split in ``training.per_split``), not per model. The
trainer stops at the start of the epoch ``patience`` epochs after the best one, so at an
evaluation every 5 epochs (the release's period is not in the reference notes) the release's
"6 evaluations without a better value" is ``patience: 31`` (the sixth is at best + 30), and then
no run stops before epoch 30 anyway; under the pipeline's patience 20 (4 evaluations),
``min_epochs: 30`` keeps the release's floor. The release selects by ``recall@10``, the pipeline
by ``recall@20``. The defaults are the committed runs' (64 coordinates, pair batches of 300
users, weight decay 5e-3, margin 0.1, no floor).

Differences from the released code, on purpose:

* ``sampling: pairs`` (the default) instead of the released triples (``sampling: users``
  above); the loss is the sum over the batch's triples either way, as HGCF's;
* user-uniform triples are drawn among users with train items (the released loop draws among
  all users and skips those without, so its epoch is shorter where such users exist);
* geoopt's Lorentz maps replace the released hand-written ``Hyperboloid`` ones (same formulas;
  geoopt clamps the Minkowski norm at 1e-4 rather than 1e-15 and evaluates arcosh in float64);
* evaluation scores are not clamped at 50 (so far items do not tie); the released evaluation
  clamps and loops over users, here all items are scored by one matrix product per batch.

The propagation is the same matrix product on the whole graph at every batch; on the CPU it runs
through scipy (:class:`pipeline.models.layers.SparseOperator`); G is not symmetric, so the backward
pass multiplies by G^T. With the speed switch on (``training.fast``), for pair batches and
triples alike, the loss, the propagation and the optimiser step run through
``pipeline/models/fast/hgcf.py`` (torch's CSR products on both threads, the maps, the margin loss
and Riemannian SGD with their arithmetic written out): the same function up to float32 rounding,
except the momentum's transport, which geoopt computes with float32 cancellation and the fast
optimiser in closed form (its docstring).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import scipy.sparse as sp
import torch

from pipeline.data.dataset import InteractionData
from pipeline.models.lorentz import (
    LORENTZ,
    SQDIST_CLAMP,
    expmap0,
    geoopt,  # imported there, without geoopt's import-time deprecation warnings
    logmap0,
    pairwise_sqdist,
    projx,
    sqdist,
)
from pipeline.models import checks as c
from pipeline.models import fast
from pipeline.models.base import Recommender
from pipeline.models.fast import hgcf as fast_hgcf
from pipeline.models.layers import SparseOperator, row_normalized_adjacency, sample_pairs, to_torch_csr, triple_batches


SAMPLINGS = ("pairs", "users")


@dataclass(frozen=True)
class HGCFConfig:
    """HDRM's stage 1 (exported by the embed stage, --model hgcf): 3 layers as HDRM's ML-1M script; the
    defaults are the committed 64-d runs' (64 coordinates, the shared trainer's batches of users
    with all their pairs). The released recipe is in the module docstring (``emb_size: 512``,
    ``weight_decay: 0.001``, ``sampling: users``, ``batch_size: 20000``, ``min_epochs: 30``);
    params.yaml's ``hgcf-512`` runs it.

    ``sampling``: ``pairs`` = every train pair of ``batch_size`` users per batch, one uniform
    negative each; ``users`` = the released user-uniform triples, as many per epoch as train pairs,
    ``batch_size`` triples per batch. ``min_epochs``: the trainer does not stop the run (patience)
    before the end of this epoch (the release: 30)."""

    emb_size: int = 64  # ambient coordinates per point (the time coordinate included)
    n_layers: int = 3
    lr: float = 0.001
    weight_decay: float = 0.005
    momentum: float = 0.95
    margin: float = 0.1
    init_scale: float = 0.1
    batch_size: int = 300
    epochs: int = 500
    sampling: str = "pairs"
    min_epochs: int = 0

    def problems(self) -> list[tuple[str | tuple[str, ...], str]]:
        """(key, message) for every impossible value (types are checked before)."""
        out = c.counts(self, "batch_size", "epochs", "n_layers")
        if self.emb_size < 2:
            out.append(("emb_size", f"must be >= 2 (the time coordinate plus at least one more), got {self.emb_size}"))
        out += c.positive(self, "lr") + c.non_negative(self, "weight_decay")
        if not 0 <= self.momentum < 1:
            out.append(("momentum", f"must be in [0, 1), got {self.momentum}"))
        out += c.one_of(self, "sampling", SAMPLINGS) + c.non_negative(self, "min_epochs")
        return out + c.non_negative(self, "margin") + c.positive(self, "init_scale")


class HGCF(Recommender, key="hgcf"):
    Config = HGCFConfig
    display_name = "HGCF"
    family = "classic"  # the tables' row group: classic, generative or diffusion

    def __init__(self, config: HGCFConfig, n_users: int, n_items: int, *, data: InteractionData | None = None, **side):
        super().__init__()  # other side inputs are not used
        data = self.given_data(data, n_users, n_items)
        self.config = config
        self.n_users, self.n_items = n_users, n_items
        self.user_embedding = geoopt.ManifoldParameter(self._initial_points(n_users), manifold=LORENTZ)
        self.item_embedding = geoopt.ManifoldParameter(self._initial_points(n_items), manifold=LORENTZ)
        self.graph = SparseOperator(row_normalized_adjacency(data.train))  # rebuilt from the data, not state
        self._cache: tuple | None = None
        self._csr: tuple[torch.Tensor, torch.Tensor] | None = None  # the fast path's G and G^T

    def _initial_points(self, n: int) -> torch.Tensor:
        u = torch.empty(n, self.config.emb_size).uniform_(-self.config.init_scale, self.config.init_scale)
        return expmap0(u).detach()

    # ------------------------------------------------------------------ contract

    def optimizer(self) -> torch.optim.Optimizer:
        cls = fast_hgcf.RiemannianSGD if fast.enabled() and self.config.momentum > 0 else geoopt.optim.RiemannianSGD
        return cls(self.parameters(), lr=self.config.lr, momentum=self.config.momentum, weight_decay=self.config.weight_decay)

    def batches(self, matrix: sp.csr_matrix, generator: torch.Generator | None = None) -> Iterator[tuple]:
        """``sampling: pairs``: the contract's user batches; ``users``: the released epoch of
        user-uniform triples, (rows of width 0, users, positives, negatives) per batch of
        ``batch_size`` (:func:`pipeline.models.layers.triple_batches`)."""
        if self.config.sampling == "users":
            yield from triple_batches(matrix, self.config.batch_size, generator)
        else:
            yield from super().batches(matrix, generator)

    def loss(self, rows: torch.Tensor, users: np.ndarray, positives: torch.Tensor | None = None,
             negatives: torch.Tensor | None = None) -> torch.Tensor:
        """The margin loss of a batch: of every train pair of the rows' users with a drawn negative
        (``positives`` None), or of the given triples (users[k], positives[k], negatives[k])."""
        if positives is None:
            b, pos, neg = sample_pairs(rows)
            uid = torch.as_tensor(np.asarray(users), dtype=torch.long, device=b.device)[b]
        else:
            uid = torch.as_tensor(np.asarray(users), dtype=torch.long, device=positives.device)
            pos, neg = positives, negatives
        if fast.enabled() and len(uid) > 0:
            points = self._fast_points()
            device = points.device
            return fast_hgcf.triple_loss(points, uid.to(device), pos.to(device), neg.to(device),
                                         self.n_users, self.config.margin)
        user_points, item_points = self.propagate()
        if len(uid) == 0:  # no train interaction in this batch: a zero that still backpropagates
            return (user_points.sum() + item_points.sum()) * 0.0
        device = user_points.device
        uid, pos, neg = uid.to(device), pos.to(device), neg.to(device)
        u = user_points[uid]
        d_pos = sqdist(u, item_points[pos]).clamp(max=SQDIST_CLAMP)
        d_neg = sqdist(u, item_points[neg]).clamp(max=SQDIST_CLAMP)
        return torch.relu(d_pos - d_neg + self.config.margin).sum()

    @torch.no_grad()
    def scores(self, rows: torch.Tensor | None, users: np.ndarray) -> torch.Tensor:
        user_points, item_points = self._propagated_cached()
        idx = torch.as_tensor(np.asarray(users), dtype=torch.long, device=user_points.device)
        return -pairwise_sqdist(user_points[idx], item_points)

    @torch.no_grad()
    def final_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The final points (users (U, D), items (I, D)), float32 on the CPU: HDRM's input."""
        users, items = self._propagate_as_trained()
        return users.detach().float().cpu().clone(), items.detach().float().cpu().clone()


    # ------------------------------------------------------------------ internals
    def _ego(self) -> torch.Tensor:
        """The ego points, users then items, as a plain tensor (geoopt's parameter class off)."""
        return torch.cat([self.user_embedding, self.item_embedding]).as_subclass(torch.Tensor)

    def propagate(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Final points on the hyperboloid: (users (U, D), items (I, D))."""
        layer = logmap0(projx(self._ego()))
        total = None
        for _ in range(self.config.n_layers):
            layer = self.graph @ layer
            total = layer if total is None else total + layer
        points = expmap0(total)
        return points[: self.n_users], points[self.n_users :]

    def _propagated_cached(self) -> tuple[torch.Tensor, torch.Tensor]:
        """propagate() without gradients, reused while the weights are unchanged (evaluation scores
        users in chunks; the optimiser step and load_state_dict bump the tensor versions)."""
        w_u, w_i = self.user_embedding, self.item_embedding
        key = (w_u._version, w_i._version, w_u.data_ptr(), w_i.data_ptr(), self.config.n_layers)
        if self._cache is None or self._cache[0] != key:
            with torch.no_grad():
                self._cache = (key, self._propagate_as_trained())
        return self._cache[1]

    def _fast_points(self) -> torch.Tensor:
        """``propagate()`` through the fast path's CSR products, users and items stacked."""
        ego = self._ego()
        device = ego.device
        if self._csr is None or self._csr[0].device != device:
            self._csr = tuple(to_torch_csr(m).to(device=device, dtype=ego.dtype) for m in (self.graph.cpu, self.graph.cpu_t))
        return fast_hgcf.propagate(ego, *self._csr, self.config.n_layers)

    def _propagate_as_trained(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The final points computed by the path the model trains with."""
        if fast.enabled():
            points = self._fast_points()
            return points[: self.n_users], points[self.n_users :]
        return self.propagate()
