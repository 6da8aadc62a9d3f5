"""TV-Diff: a tri-view diffusion framework for recommendation.

Reference: Ziyang Chen et al. "Towards A Tri-View Diffusion Framework for Recommendation".
KDD 2026. arXiv:2511.20122. Released code: github.com/umsimonchen/TV-Diff
(``model/graph/TV_Diff.py``: ``AnisotropicNN``, ``TV_Diff_Encoder``; ``util/sampler.py``;
``conf/TV_Diff.conf``), inside a SELFRec-style framework.

Contract: the shared model contract (``pipeline/models/base.py``); the item view needs the
training graph, so the model takes ``data`` by keyword.

What is implemented (the project's reference description, ``../shared/reference/README.md``):

* forward process: DiffRec's Gaussian diffusion on the binary train row
  (:class:`pipeline.models.diffusion.GaussianDiffusion`: linear-var schedule, beta_1 fixed to
  1e-5, x0-prediction), timesteps drawn uniformly (no importance sampling, no reweighting);
* the anisotropic two-tower denoiser (no biases, Xavier-uniform weights): user tower
  h_u = tanh(dropout(x_t) W_item + temb W_time) (then tanh(h W) per further layer), temb =
  Linear(sinusoidal(t, emb_size)); item tower h_i = tanh(R~^T W_user) (then tanh(h W) per further
  layer) with R~ = D_u^-1/2 R D_i^-1/2 the normalised user-item graph (zero-degree rows and
  columns stay 0) and W_user a free |U| x d_0 matrix; prediction x^ = h_u h_i^T. R~ stays sparse
  (:class:`pipeline.models.layers.SparseOperator`: scipy on the CPU, torch sparse CSR elsewhere);
* the free-energy loss = energy - temp x entropy term: per user the MSE to x_0 over items, minus
  ``temp`` times a likelihood term divided by |I|:
  ``bce``: sum_{i in P(u)} log sigma(x^_ui) + sum_{j in N(u)} log sigma(-x^_uj), |N(u)| = |P(u)|
  sampled negatives (without replacement); ``nll``: the positive sum only; ``bpr``: one negative
  per train pair and loss = mean over pairs of the row's MSE - temp x log(1e-5 + sigma(x^_ui -
  x^_uj)) (not divided by |I|, as released);
* batches as released: ``bce`` and ``nll`` iterate over users (``batch_size`` users per optimizer
  step); ``bpr`` (``batching: pairs``, the default) over the train (user, positive) pairs,
  shuffled, ``batch_size`` pair-rows per step, each row its user's full train row plus the pair's
  positive, with its own timestep, noise, dropout mask and negative (:meth:`TVDiff.batches`,
  :meth:`TVDiff.pair_loss`; ML-1M: ~200 steps per epoch). ``batching: users`` keeps the shared
  trainer's user batches for ``bpr`` too (ML-1M: 3 steps per epoch; fewer optimizer steps than
  released, kept for comparison, no committed run uses it): all pairs of a user share the user's timestep and noise, and the MSE is weighted by each
  user's number of pairs (same expectation per step);
* the budget rule: an epoch is one pass over what the form iterates over, so with pair batches
  one epoch is one released epoch and ``eval_every``, ``patience`` and ``epochs`` count released
  epochs (with user batches they count passes over the users, ~66x fewer optimizer steps each);
* negatives: uniform over the user's unobserved items, or AR-GSP (``ar_gsp: true``, below);
* inference: from the clean train row, T posterior-mean steps with the predicted x_0, no noise,
  dropout off (:meth:`TVDiff.scores`, the step-by-step loop); with the speed switch on
  (``training.fast``, ``pipeline/models/fast/tvdiff.py``) the same chain algebraically folded like
  DiffRec's, equal up to float rounding.

AR-GSP (acceptance-rejection Gumbel sampling of negatives), per row of the batch (a user, or a
pair row of the bpr form) with its timestep t: candidates = the top floor(gamma |I|) items of
the row's (detached) predicted scores; log-weights log c_i + g_i with c_i the candidate
indicator and g_i Gumbel(0, 1) noise, at temperature tau_t = exp(-ar_lambda (1 - t/T)); observed
(train) items and non-candidates are rejected exactly (weight 0; the released code clamps every
weight to >= 1e-10, so it can draw them); the draw is multinomial with those weights: without
replacement for ``bce`` (Gumbel-top-k, the same law as ``torch.multinomial(...,
replacement=False)``), one per pair for ``bpr``. All of it is vectorised over the batch. Note:
with the released 0/1 candidate weights every candidate has the same log-weight, so the
perturbed law is exchangeable and the draw is uniform over the unobserved candidates whatever
tau_t is; the temperature is implemented as specified and would matter for non-uniform weights.
A user with fewer unobserved candidates than needed gets only those (released:
``torch.multinomial`` would fail or fall back to the 1e-10 weights).

Differences from the released code, on purpose:

* dropout is off at evaluation (the released ``AnisotropicNN`` is never put in eval mode, so its
  inference keeps dropout 0.5 on the input row);
* selection and stopping follow the shared trainer: validation (not test) Recall@20 every
  ``eval_every`` epochs, ``patience`` epochs without a new best (released: test, every epoch,
  10 epochs); with pair batches both count released epochs (see the budget rule above);
* ``bpr`` / uniform negatives: one per pair row, a uniform item redrawn while observed, as
  released, but from torch's global generator (released: Python's ``random.choice``);
* ``bce`` / uniform negatives: drawn with Gumbel-top-k on torch's global generator instead of
  ``torch.multinomial`` over a dense |U| x |I| probability matrix; a user with more train items
  than unobserved ones gets all unobserved ones (released: an error);
* only the first layer has a time weight (the released code allocates ``time_weight%d`` for every
  layer and uses only the first, so the others are untrained parameters);
* the time-embedding layer keeps torch's default ``nn.Linear`` initialisation, as released; the
  dropout mask comes from ``torch.rand`` as in DiffRec here (same distribution as ``nn.Dropout``);
* AR-GSP rejects observed items and non-candidates exactly (see above); the released code ships
  AR-GSP switched off (``hard = False``), here it is ``ar_gsp``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.data.dataset import InteractionData, dense_rows
from pipeline.models import checks as c
from pipeline.models import fast
from pipeline.models.fast import tvdiff as fast_tvdiff
from pipeline.models.layers import SparseOperator, dropout, timestep_embedding
from pipeline.models.diffusion import GaussianDiffusion
from pipeline.models.base import Recommender

LOSS_TYPES = ("bce", "bpr", "nll")
BATCHINGS = ("pairs", "users")
BPR_EPS = 1e-5  # the released log(10e-6 + sigmoid(pos - neg))


@dataclass(frozen=True)
class TVDiffConfig:
    """The authors' lastfm setting (their sweep scripts' headline point, and the lastfm line of
    ``conf/TV_Diff.conf`` at commit 5ecdffa; reference README): bpr free energy, temperature 5,
    T 5, noise 1e-4 / 5e-4 / 5e-3, width 1000, batch 2048 pair-rows per step (bpr) or users (bce,
    nll); AR-GSP off, as the released code ships it. The release's final ``conf/TV_Diff.conf``
    (HEAD, its last run on Gowalla) is another setting: bce, T 40, noise 1e-3 / 1e-3 / 1e-2,
    temperature 10.

    ``batching`` (``bpr`` only; ``bce`` and ``nll`` always iterate over users, as released):
    ``pairs`` = the released batches, ``batch_size`` (user, positive) pair-rows per optimizer step,
    one epoch = one pass over the train pairs (ML-1M: 197 steps clean, 210 noisy); ``users`` = the shared trainer's
    user batches, all pairs of a user in its row's batch with one timestep and noise draw (ML-1M:
    3 steps per epoch, ~66x fewer optimizer steps than released)."""

    lr: float = 0.001
    weight_decay: float = 0.0
    batch_size: int = 2048
    # a cap; counts released epochs with pair batches (one pass over the train pairs: ML-1M ~260 s
    # on one core), shared-trainer epochs with user batches (~3.5 s)
    epochs: int = 200
    dims: list = field(default_factory=lambda: [1000])
    emb_size: int = 64
    dropout: float = 0.5
    steps: int = 5
    noise_scale: float = 1.0e-4
    noise_min: float = 5.0e-4
    noise_max: float = 5.0e-3
    loss_type: str = "bpr"
    batching: str = "pairs"
    temp: float = 5.0
    ar_gsp: bool = False
    gamma: float = 0.2
    ar_lambda: float = 3.0

    def problems(self) -> list[tuple[str | tuple[str, ...], str]]:
        """(key or keys involved, message) for every impossible value (types are checked before)."""
        out = [
            *c.positive(self, "lr"),
            *c.non_negative(self, "weight_decay"),
            *c.counts(self, "batch_size", "epochs", "steps", "emb_size"),
            *c.dims(self),
            *c.fractions(self, "dropout"),
            *c.non_negative(self, "noise_scale"),
            *c.noise_bounds(self),
            *c.one_of(self, "loss_type", LOSS_TYPES),
            *c.one_of(self, "batching", BATCHINGS),
            *c.non_negative(self, "temp"),
        ]
        if not 0.0 < self.gamma <= 1.0:
            out.append(("gamma", f"must be in (0, 1], got {self.gamma}"))
        return out + c.non_negative(self, "ar_lambda")


# ---------------------------------------------------------------------------- the item view
def normalized_interactions(train: sp.spmatrix) -> sp.csr_matrix:
    """R~ = D_u^-1/2 R D_i^-1/2 of the binarised train matrix (users x items); users or items
    without interactions keep zero rows / columns."""
    r = sp.csr_matrix(train, dtype=np.float64)
    r.data[:] = 1.0
    du, di = np.asarray(r.sum(axis=1)).ravel(), np.asarray(r.sum(axis=0)).ravel()
    inv_u, inv_i = np.zeros_like(du), np.zeros_like(di)
    np.power(du, -0.5, out=inv_u, where=du > 0)
    np.power(di, -0.5, out=inv_i, where=di > 0)
    out = (sp.diags(inv_u) @ r @ sp.diags(inv_i)).tocsr().astype(np.float32)
    out.sort_indices()
    return out


def train_pairs(matrix: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """(user, item) of every entry > 0 of the train matrix, in row-major order."""
    m = sp.csr_matrix(matrix, copy=True)
    m.sum_duplicates()
    users = np.repeat(np.arange(m.shape[0]), np.diff(m.indptr))
    keep = m.data > 0
    return users[keep], m.indices[keep].astype(np.int64)


# ---------------------------------------------------------------------------- negatives
def gumbel(shape, device) -> torch.Tensor:
    """Standard Gumbel noise -log(-log U) from torch's global generator (U clamped away from 0)."""
    u = torch.rand(shape, device=device).clamp_(min=1e-20)
    return -torch.log(-torch.log(u))


def ar_gsp_temperature(t: torch.Tensor, steps: int, ar_lambda: float) -> torch.Tensor:
    """tau_t = exp(-lambda (1 - t / T)) for timesteps t in 0..T-1 (the released schedule)."""
    return torch.exp(-ar_lambda * (1.0 - t.to(torch.float64) / steps)).to(torch.float32)


def candidate_mask(scores: torch.Tensor, gamma: float) -> torch.Tensor:
    """Boolean (B, I): the top max(1, floor(gamma I)) items of each row of ``scores``."""
    n = max(1, int(gamma * scores.shape[1]))
    top = scores.topk(n, dim=1).indices
    return torch.zeros_like(scores, dtype=torch.bool).scatter_(1, top, True)


def draw_negatives(log_weights: torch.Tensor, counts: torch.Tensor, replacement: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(row, item) of min(counts[r], #allowed in row r) draws per row r, multinomial with weights
    exp(log_weights); -inf log-weights are never drawn.

    Without replacement: Gumbel-top-k (the k largest log_weights + Gumbel noise), which has the
    law of successive multinomial draws without replacement. With replacement: ``torch.multinomial``
    on the row-normalised weights, ``counts[r]`` independent draws (rows without any allowed item
    get none). Rows come out in order, the draws of a row in draw order.
    """
    allowed = torch.isfinite(log_weights)
    available = allowed.sum(1)
    take = counts if replacement else torch.minimum(counts, available)
    take = torch.where(available > 0, take, torch.zeros_like(take))
    k = int(take.max()) if len(take) else 0
    if k == 0:
        empty = torch.zeros(0, dtype=torch.long, device=log_weights.device)
        return empty, empty
    if replacement:
        rows_with = (take > 0).nonzero().squeeze(1)
        lw = log_weights[rows_with]
        probs = torch.exp(lw - lw.max(dim=1, keepdim=True).values)
        drawn = torch.multinomial(probs, k, replacement=True)
        keep = torch.arange(k, device=drawn.device).unsqueeze(0) < take[rows_with].unsqueeze(1)
        row = rows_with.unsqueeze(1).expand(-1, k)[keep]
        return row, drawn[keep]
    keys = torch.where(allowed, log_weights + gumbel(log_weights.shape, log_weights.device), -math.inf)
    drawn = keys.topk(k, dim=1).indices
    keep = torch.arange(k, device=drawn.device).unsqueeze(0) < take.unsqueeze(1)
    row = torch.arange(len(take), device=drawn.device).unsqueeze(1).expand(-1, k)[keep]
    return row, drawn[keep]


def ar_gsp_log_weights(scores: torch.Tensor, observed: torch.Tensor, t: torch.Tensor, steps: int, gamma: float,
                       ar_lambda: float) -> torch.Tensor:
    """AR-GSP's log-weights (B, I): (log c_i + g_i) / tau_t, -inf for non-candidates and observed items."""
    accept = candidate_mask(scores, gamma) & ~observed
    tau = ar_gsp_temperature(t, steps, ar_lambda).unsqueeze(1)
    return torch.where(accept, gumbel(scores.shape, scores.device) / tau, -math.inf)


def uniform_negative_per_row(observed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(row, item): one item per row of ``observed`` (B, I), uniform over the row's unobserved
    items, by rejection as the released pair sampler draws it (a uniform item, redrawn while
    observed); rows without an unobserved item get none. Rows come out in order."""
    n_items = observed.shape[1]
    rows = (~observed.all(1)).nonzero().squeeze(1)
    items = torch.randint(0, n_items, (len(rows),), device=observed.device)
    todo = observed[rows, items].nonzero().squeeze(1)
    while len(todo):
        items[todo] = torch.randint(0, n_items, (len(todo),), device=observed.device)
        todo = todo[observed[rows[todo], items[todo]]]
    return rows, items


def uniform_log_weights(observed: torch.Tensor) -> torch.Tensor:
    """Uniform over the unobserved items: 0, -inf for observed ones."""
    return torch.where(observed, -math.inf, 0.0)


# ---------------------------------------------------------------------------- denoiser
class AnisotropicDenoiser(nn.Module):
    """TV-Diff's two-tower denoiser: x^ = h_u(x_t, t) h_i^T, the item tower over R~."""

    def __init__(self, n_users: int, n_items: int, dims: list[int], emb_size: int, dropout: float, graph: sp.csr_matrix):
        super().__init__()
        self.emb_size = emb_size
        self.dropout = dropout
        self.emb_layer = nn.Linear(emb_size, emb_size)  # torch's default initialisation, as released
        widths = list(dims)
        self.item_weights = nn.ParameterList()  # the user tower ("item_weight%d" in the released code)
        self.user_weights = nn.ParameterList()  # the item tower ("user_weight%d")
        for i, width in enumerate(widths):
            item_in = n_items if i == 0 else widths[i - 1]
            user_in = n_users if i == 0 else widths[i - 1]
            self.item_weights.append(nn.Parameter(nn.init.xavier_uniform_(torch.empty(item_in, width))))
            if i == 0:
                self.time_weight = nn.Parameter(nn.init.xavier_uniform_(torch.empty(emb_size, width)))
            self.user_weights.append(nn.Parameter(nn.init.xavier_uniform_(torch.empty(user_in, width))))
        self.graph_t = SparseOperator(graph.T.tocsr())  # R~^T (items x users), not state

    def time_term(self, t: torch.Tensor) -> torch.Tensor:
        emb = self.emb_layer(timestep_embedding(t, self.emb_size).to(self.time_weight))
        return emb @ self.time_weight

    def item_tower(self) -> torch.Tensor:
        h = torch.tanh(self.graph_t @ self.user_weights[0])
        for w in self.user_weights[1:]:
            h = torch.tanh(h @ w)
        return h

    def user_tower(self, first: torch.Tensor) -> torch.Tensor:
        """From the first layer's pre-activation to the last user-tower layer."""
        h = torch.tanh(first)
        for w in self.item_weights[1:]:
            h = torch.tanh(h @ w)
        return h

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, item_h: torch.Tensor | None = None) -> torch.Tensor:
        item_h = self.item_tower() if item_h is None else item_h
        h_u = self.user_tower(self._drop(x_t) @ self.item_weights[0] + self.time_term(t))
        return h_u @ item_h.T

    def _drop(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.dropout, self.training)


# ---------------------------------------------------------------------------- model
class TVDiff(Recommender, key="tvdiff"):
    Config = TVDiffConfig
    display_name = "TV-Diff"
    family = "diffusion"  # the tables' row group: classic, generative or diffusion

    def __init__(self, config: TVDiffConfig, n_users: int, n_items: int, *, data: InteractionData | None = None, **side):
        super().__init__()  # other side inputs are not used
        data = self.given_data(data, n_users, n_items, needs="the training graph for its item view")
        self.config = config
        self.n_users, self.n_items = n_users, n_items
        self.diffusion = GaussianDiffusion(
            steps=config.steps, noise_scale=config.noise_scale, noise_min=config.noise_min, noise_max=config.noise_max,
            schedule="linear-var", max_beta=0.999, beta_fixed=True,
        )
        self.denoiser = AnisotropicDenoiser(
            n_users, n_items, list(config.dims), config.emb_size, config.dropout, normalized_interactions(data.train)
        )

    # ------------------------------------------------------------------ contract

    def optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.denoiser.parameters(), lr=self.config.lr, weight_decay=self.config.weight_decay)

    @property
    def pair_batches(self) -> bool:
        """True: an epoch iterates over (user, positive) pairs (``bpr`` with ``batching: pairs``)."""
        return self.config.loss_type == "bpr" and self.config.batching == "pairs"

    def batches(self, matrix: sp.csr_matrix, generator: torch.Generator | None = None) -> Iterator[tuple]:
        """User batches (the contract's default), or for ``bpr`` with ``batching: pairs`` the
        released pair batches: every train (user, positive) pair once, shuffled by ``torch.randperm``
        over the pairs, ``batch_size`` pairs per batch (the last one smaller); a batch is
        (rows, users, positives) with one row per pair, its user's full train row."""
        if not self.pair_batches:
            yield from super().batches(matrix, generator)
            return
        pair_users, pair_items = train_pairs(matrix)
        order = torch.randperm(len(pair_users), generator=generator).numpy()
        size = self.config.batch_size
        for start in range(0, len(order), size):
            index = order[start : start + size]
            users = pair_users[index]
            yield dense_rows(matrix, users), users, torch.from_numpy(pair_items[index])

    def loss(self, rows: torch.Tensor, users: np.ndarray | None = None, positives: torch.Tensor | None = None) -> torch.Tensor:
        """The free energy of one batch: of user rows (``positives`` None), or of pair rows, row r
        carrying its user's train row and the pair's positive ``positives[r]`` (bpr only)."""
        if positives is not None:
            return self.pair_loss(rows, positives)
        cfg = self.config
        x0 = rows
        t = torch.randint(0, cfg.steps, (x0.shape[0],), device=x0.device)
        noise = torch.randn_like(x0)
        x_t = self.diffusion.q_sample(x0, t, noise) if cfg.noise_scale != 0.0 else x0
        out = self.denoiser(x_t, t)
        mse = ((x0 - out) ** 2).mean(dim=1)
        observed = x0 > 0
        counts = observed.sum(1)
        if cfg.loss_type == "nll":
            likelihood = (F.logsigmoid(out) * observed).sum(1)
            return (mse - cfg.temp * likelihood / self.n_items).mean()
        log_w = self.negative_log_weights(out.detach(), observed, t)
        if cfg.loss_type == "bce":
            row, item = draw_negatives(log_w, counts, replacement=False)
            negative = torch.zeros_like(out).index_put_((row, item), torch.ones_like(row, dtype=out.dtype))
            likelihood = (F.logsigmoid(out) * observed).sum(1) + (F.logsigmoid(-out) * negative).sum(1)
            return (mse - cfg.temp * likelihood / self.n_items).mean()
        # bpr: one negative per train pair
        pair_row, pos = observed.nonzero(as_tuple=True)
        if len(pair_row) == 0:
            return mse.mean()
        row, neg = draw_negatives(log_w, counts, replacement=True)
        # draw_negatives returns counts[r] draws per row with any allowed item, rows in order: pair
        # them with that row's positives (both grouped by row); rows without allowed items drop out
        has = torch.zeros_like(counts, dtype=torch.bool)
        has[row] = True
        keep = has[pair_row]
        pair_row, pos = pair_row[keep], pos[keep]
        if not torch.equal(row, pair_row):  # cannot happen: both list counts[r] entries per row, rows in order
            raise RuntimeError("TV-Diff bpr: negatives and positives are not aligned")
        weight = counts.to(mse.dtype)
        energy = (weight * mse).sum() / weight.sum()
        if len(pair_row) == 0:
            return energy
        diff = out[pair_row, pos] - out[row, neg]
        return energy - cfg.temp * self.bpr_likelihood(diff)

    def pair_loss(self, rows: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
        """The released bpr free energy of a batch of pair rows: per row its own timestep, noise
        and dropout draw, one negative (uniform over the row's unobserved items, or AR-GSP's with
        the row's timestep); loss = mean over rows of MSE - temp x log(1e-5 + sigma(x^_pos - x^_neg)).
        With the speed switch on (``training.fast``), the same loss without the B x |I| prediction
        (``pipeline/models/fast/tvdiff.py``), equal up to float rounding."""
        if fast.enabled():
            return fast_tvdiff.pair_loss(self, rows, positives)
        cfg = self.config
        if cfg.loss_type != "bpr":
            raise ValueError(f"TV-Diff: pair batches are the bpr form's, not {cfg.loss_type!r}'s")
        x0 = rows
        t = torch.randint(0, cfg.steps, (x0.shape[0],), device=x0.device)
        noise = torch.randn_like(x0)
        x_t = self.diffusion.q_sample(x0, t, noise) if cfg.noise_scale != 0.0 else x0
        out = self.denoiser(x_t, t)
        energy = ((x0 - out) ** 2).mean(dim=1).mean()
        observed = x0 > 0
        row, neg = self.pair_negatives(out.detach() if cfg.ar_gsp else None, observed, t)
        if len(row) == 0:  # every row's user has every item
            return energy
        diff = out[row, positives[row]] - out[row, neg]
        return energy - cfg.temp * self.bpr_likelihood(diff)

    @staticmethod
    def bpr_likelihood(diff: torch.Tensor) -> torch.Tensor:
        """The released bpr term: the mean over pairs of log(1e-5 + sigma(x^_pos - x^_neg))."""
        return torch.log(BPR_EPS + torch.sigmoid(diff)).mean()

    def pair_negatives(self, scores: torch.Tensor | None, observed: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(row, item): one negative per pair row, AR-GSP's among the row's candidates (from its
        detached predicted ``scores``, needed only then) or uniform over its unobserved items (the
        same law as a draw from uniform_log_weights, without a (B, I) multinomial)."""
        if self.config.ar_gsp:
            log_w = self.negative_log_weights(scores, observed, t)
            return draw_negatives(log_w, torch.ones(len(observed), dtype=torch.long, device=observed.device), replacement=True)
        return uniform_negative_per_row(observed)

    def negative_log_weights(self, scores: torch.Tensor, observed: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Log-weights of the negative draw: AR-GSP's or uniform over unobserved items."""
        cfg = self.config
        if cfg.ar_gsp:
            return ar_gsp_log_weights(scores, observed, t, cfg.steps, cfg.gamma, cfg.ar_lambda)
        return uniform_log_weights(observed)

    @torch.no_grad()
    def scores(self, rows: torch.Tensor, users: np.ndarray | None = None) -> torch.Tensor:
        """The released inference: T reverse posterior-mean steps from the clean row, one denoiser
        call per step, with the current train/eval mode (the released code keeps dropout on). With
        the speed switch on (``training.fast``) and in eval mode, the same chain folded
        (``pipeline/models/fast/tvdiff.py``), equal up to float rounding."""
        if fast.enabled() and not self.training:
            return fast_tvdiff.folded_scores(self, rows)
        item_h = self.denoiser.item_tower()
        return self.diffusion.reverse(lambda x, t: self.denoiser(x, t, item_h), rows, 0)
