"""L-DiffRec and LT-DiffRec: latent diffusion over clustered item groups.

Reference: Wenjie Wang, Yiyan Xu, Fuli Feng, Xinyu Lin, Xiangnan He, Tat-Seng Chua.
"Diffusion Recommender Model". SIGIR 2023. arXiv:2304.04971, Section 3.4 (L-DiffRec) and
Section 3.5 (T-DiffRec; LT-DiffRec combines both).
Released code: github.com/YiyanXu/DiffRec, folder ``L-DiffRec`` (``main.py``,
``models/Autoencoder.py``, ``models/DNN.py``, ``models/gaussian_diffusion.py``).

Model (the project's reference description, ``../shared/reference/README.md``):

* items are split into ``n_clusters`` groups (k-means on pre-trained item embeddings, done
  outside this module and passed in as ``clusters``, an item -> cluster id array);
* per cluster c a VAE encoder ``Linear(|c|, 2 lat_c)`` + tanh over that cluster's columns of the
  (input-dropout) row; the first ``lat_c`` outputs are mu, the rest log-variance; the latents
  are concatenated in cluster-id order (``latent_size`` in total);
* a decoder ``Linear(latent_size, n_items)`` gives item logits;
* Gaussian diffusion (x0-prediction, ``GaussianDiffusion`` with ``beta_fixed`` from the config;
  the authors' L-DiffRec does not fix beta_1) on the latent, with DiffRec's MLP denoiser
  (dims [300]: latent+emb -> 300 -> latent);
* training: latent = reparameterised sample; diffusion loss on it; the decoder reconstructs the
  row from the denoiser's predicted latent x0; AE loss = multinomial NLL + kl_weight * KL;
  total = lamda_t * diffusion loss + AE loss;
* inference: latent = mu; all T reverse steps (posterior mean with the predicted x0, no noise);
  decode; rank. With the speed switch on, the T steps run folded (DiffRec's
  ``pipeline/models/fast/diffrec.py``: the same posterior means, the products reassociated, so
  the scores move by float rounding).

Schedules, as in the released ``main.py`` (``update_count`` counts finished epochs,
``update_count_vae`` finished batches)::

    lamda_t   = max(lamda * (1 - epochs_done / lamda_anneal_epochs), lamda_floor)   (0 epochs: max(lamda, floor))
    kl_weight = min(kl_weight_max, batches_done / kl_anneal_batches)                  (0 batches: kl_weight_max)

So lamda falls linearly towards 0 with slope lamda / lamda_anneal_epochs and is held at the
floor (0.03 -> 0.005 is reached after 417 of the 500 epochs), and the KL weight rises by
1 / kl_anneal_batches per batch until it reaches its cap (0.3 after 60 of the 200 batches).
Both counters live in one registered buffer (``batches_seen``); the epoch is
``batches_seen // ceil(n_users / batch_size)``, so a resumed run anneals exactly like an
uninterrupted one. The diffusion's importance-sampling history is a buffer too.

Latent sizes (``latent_sizes``): lat_c proportional to |c|, summing exactly to latent_size, by
the largest-remainder rule: floor(latent_size |c| / n_items) each, then the leftover units one
each to the clusters with the largest fractional parts (ties: larger cluster, then lower id);
a cluster left at 0 takes one unit from the currently largest latent (ties: lower id). For two
clusters this equals the authors' rule (floor for the first, the remainder for the last)
whenever the first cluster's fractional part is below 1/2, e.g. ML-1M-like 1500/1310 of 2810 ->
160/140.

Item order: encoder c reads cluster c's items in ascending original id (``item_order`` buffer,
clusters concatenated in id order). The decoder's output units are in ORIGINAL item order, so
``loss`` and ``scores`` work on original-order rows and no scores are ever permuted back (the
authors order the decoder by cluster and map the top-k through ``category_map``; the output
order of a dense Linear layer is only a labelling, so the model is the same).

Where this differs from the released code, on purpose:

* the multinomial NLL's target is the clean input row; the authors use the input after the
  encoder's dropout (scaled by 1/(1-p)), whose expectation is the clean row, so the expected
  loss is the same and only its variance differs;
* one AdamW with two parameter groups (autoencoder at ``lr_ae``, denoiser at ``lr_denoiser``,
  one ``weight_decay``) instead of two AdamW optimizers; the updates are the same (AdamW is
  per-parameter), the released best settings use weight decay 0 for both;
* ``reweight: false`` keeps total = lamda_t * diffusion + AE (the authors' branch for it swaps
  the weighting and cannot run: its ``loss`` variable is undefined there);
* the released code parses ``--reweight``/``--reparam`` with ``type=bool`` (always true); here
  they are real booleans and the encoder always samples in training (VAE, ``reparam`` true).

Initialisation as the released L-DiffRec: Xavier-normal weights, zero biases, for the
autoencoder and the denoiser (DiffRec's own DNN draws biases from N(0, 0.001) instead).
The authors' ``Autoencoder`` uses ``nn.Dropout(0.1)`` on the encoder input (its constructor
default; ``main.py`` does not pass another) and the denoiser ``nn.Dropout(0.5)`` on x_t.

With the speed switch on (``training.fast``) each encoder multiplies only its cluster's kept
nonzero entries of the sparse row (``pipeline/models/fast/sparse_input.py``), the encoder dropout
drawn per nonzero entry, AdamW is torch's fused kernel, the denoiser takes DiffRec's fast
path and the decoder oneDNN's products (``decode``: a step's bits then do not depend on the
thread count): the same function, rounded differently.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.data.dataset import InteractionData, temporal_weights
from pipeline.models import checks as c
from pipeline.models import fast
from pipeline.models.diffrec import MLPDenoiser
from pipeline.models.fast import diffrec as fast_diffrec
from pipeline.models.fast import linear as fast_linear
from pipeline.models.fast import sparse_input
from pipeline.models.layers import dropout, xavier_normal_
from pipeline.models.diffusion import SCHEDULES, DiffusionConfig, GaussianDiffusion
from pipeline.models.base import Recommender


@dataclass(frozen=True)
class _LDiffRecHead:
    """LDiffRecConfig's leading fields (see the field-order note in pipeline/models/diffusion.py)."""

    lr_ae: float = 0.001  # autoencoder (encoders + decoder) learning rate: the authors' lr1
    lr_denoiser: float = 0.0005  # denoiser learning rate: lr2
    weight_decay: float = 0.0
    batch_size: int = 400
    epochs: int = 1000  # the protocol's cap; early stopping (training.patience) ends runs before
    n_clusters: int = 2  # must equal the number of distinct ids in ``clusters``
    latent_size: int = 300  # total latent width (the authors' in_dims [300])
    ae_dropout: float = 0.1  # on the encoder input: the authors' Autoencoder default (0.5: the denoiser's)
    emb_size: int = 10  # time embedding width
    dims: list = field(default_factory=lambda: [300])  # denoiser hidden dims (mlp_dims)
    denoiser_dropout: float = 0.5  # dropout on the denoiser's x_t


@dataclass(frozen=True)
class LDiffRecConfig(DiffusionConfig, _LDiffRecHead):
    """The authors' defaults (L-DiffRec's ML-1M clean setting); the diffusion fields come from
    :class:`~pipeline.models.diffusion.DiffusionConfig`, two with L-DiffRec's own default."""

    noise_max: float = 0.02
    beta_fixed: bool = False
    lamda: float = 0.03  # initial weight of the diffusion loss
    lamda_floor: float = 0.005  # its floor (the authors' anneal_cap)
    lamda_anneal_epochs: int = 500  # anneal_steps (counted in epochs)
    kl_weight_max: float = 0.3  # vae_anneal_cap
    kl_anneal_batches: int = 200  # vae_anneal_steps (counted in batches)
    temporal: bool = False  # LT-DiffRec: time-weighted input rows
    w_min: float = 0.1  # used only when temporal (the released T-DiffRec's weights)
    w_max: float = 1.0

    # None: either; True/False: the model class requires that value of ``temporal``
    required_temporal: ClassVar[bool | None] = False

    def problems(self) -> list[tuple[str | tuple[str, ...], str]]:
        """(key or keys involved, message) for every impossible value (types are checked before)."""
        out = [
            *c.positive(self, "lr_ae", "lr_denoiser"),
            *c.non_negative(self, "weight_decay"),
            *c.counts(self, "batch_size", "epochs", "n_clusters", "latent_size", "steps", "emb_size", "history_num_per_term"),
        ]
        for key in ("lamda_anneal_epochs", "kl_anneal_batches"):
            value = getattr(self, key)
            if not isinstance(value, int) or value < 0:
                out.append((key, f"must be an integer >= 0 (0 = no annealing), got {value!r}"))
        if isinstance(self.n_clusters, int) and isinstance(self.latent_size, int) and self.latent_size < self.n_clusters:
            out.append((("latent_size", "n_clusters"), f"need latent_size >= n_clusters (one unit per cluster at least), got {self.latent_size} < {self.n_clusters}"))
        out += c.dims(self) + c.fractions(self, "ae_dropout", "denoiser_dropout")
        if self.mean_type != "x0":
            out.append(("mean_type", f"{self.mean_type!r} is not supported; allowed values: ['x0']"))
        out += c.one_of(self, "schedule", SCHEDULES) + c.non_negative(self, "noise_scale") + c.noise_bounds(self)
        if not 0 < self.max_beta < 1:
            out.append(("max_beta", f"must be in (0, 1), got {self.max_beta}"))
        if not (isinstance(self.steps, int) and 0 <= self.sampling_steps <= self.steps):
            out.append(("sampling_steps", f"must be in [0, steps={self.steps}], got {self.sampling_steps}"))
        out += c.unit_interval(self, "uniform_prob") + c.non_negative(self, "lamda", "lamda_floor", "kl_weight_max")
        if self.required_temporal is not None and self.temporal != self.required_temporal:
            hint = "use the model 'ltdiffrec' for time-weighted rows" if self.temporal else "LT-DiffRec is L-DiffRec on time-weighted rows"
            out.append(("temporal", f"must be {str(self.required_temporal).lower()} for this model, got {str(self.temporal).lower()} ({hint})"))
        if self.temporal and not (0 <= self.w_min <= self.w_max and self.w_max > 0):
            out.append((("w_min", "w_max"), f"need 0 <= w_min <= w_max and w_max > 0, got {self.w_min} and {self.w_max}"))
        return out


@dataclass(frozen=True)
class LTDiffRecConfig(LDiffRecConfig):
    temporal: bool = True  # LT-DiffRec is L-DiffRec on time-weighted rows
    required_temporal: ClassVar[bool | None] = True


def latent_sizes(cluster_sizes: list[int], latent_size: int) -> list[int]:
    """Per-cluster latent widths proportional to the cluster sizes, summing to ``latent_size``.

    Largest-remainder rule (see the module docstring); every cluster gets at least one unit.
    """
    sizes = [int(s) for s in cluster_sizes]
    n, k = sum(sizes), len(sizes)
    if k == 0 or n <= 0 or min(sizes) < 1:
        raise ValueError(f"cluster sizes must be positive, got {sizes}")
    if latent_size < k:
        raise ValueError(f"latent_size {latent_size} < {k} clusters: every cluster needs one latent unit")
    exact = [latent_size * s / n for s in sizes]
    out = [int(math.floor(e)) for e in exact]
    left = latent_size - sum(out)
    by_remainder = sorted(range(k), key=lambda j: (-(exact[j] - out[j]), -sizes[j], j))
    for j in by_remainder[:left]:
        out[j] += 1
    for j in range(k):
        if out[j] == 0:
            donor = min(range(k), key=lambda d: (-out[d], d))
            out[donor] -= 1
            out[j] = 1
    assert sum(out) == latent_size and min(out) >= 1
    return out


def _xavier_zero_bias(layer: nn.Linear) -> None:
    """The released L-DiffRec's init: Xavier-normal weights, zero biases."""
    xavier_normal_(layer)
    nn.init.zeros_(layer.bias)


class LDiffRec(Recommender, key="ldiffrec"):
    Config = LDiffRecConfig
    display_name = "L-DiffRec"
    family = "diffusion"  # the tables' row group: classic, generative or diffusion
    requires = frozenset({"clusters"})  # the train stage passes the item -> cluster array (--clusters)

    def __init__(self, config: LDiffRecConfig, n_users: int, n_items: int, *, clusters: np.ndarray | None = None, **side):
        super().__init__()  # other side inputs (data) are not used
        config = self.Config(**dataclasses.asdict(config))  # this class's checks (temporal)
        problems = config.problems()
        if problems:
            raise ValueError(f"{self.display_name}: invalid config: {problems}")
        self.config = config
        self.n_users, self.n_items = n_users, n_items
        self.cluster_sizes, item_order = self._check_clusters(clusters, config.n_clusters, n_items)
        self.latent_dims = latent_sizes(self.cluster_sizes, config.latent_size)
        # position k of the cluster-sorted row holds original item item_order[k]; persistent, so
        # a saved model carries the clustering it was trained with
        self.register_buffer("item_order", torch.from_numpy(item_order))
        # the fast path's map of an original item to (its cluster, its column in that cluster's
        # encoder); derived from item_order, not saved
        cluster_of = np.repeat(np.arange(len(self.cluster_sizes)), self.cluster_sizes)
        column = np.concatenate([np.arange(size) for size in self.cluster_sizes])
        position = np.argsort(item_order)  # original item -> its position in the cluster-sorted row
        self.register_buffer("_item_cluster", torch.from_numpy(cluster_of[position]), persistent=False)
        self.register_buffer("_item_column", torch.from_numpy(column[position]), persistent=False)
        # batches trained so far: drives both annealing schedules (and therefore part of a resume)
        self.register_buffer("batches_seen", torch.zeros((), dtype=torch.long))
        self.encoders = nn.ModuleList(nn.Linear(size, 2 * lat) for size, lat in zip(self.cluster_sizes, self.latent_dims))
        self.decoder = nn.Linear(config.latent_size, n_items)
        self.diffusion = GaussianDiffusion.from_config(config)
        self.denoiser = MLPDenoiser(config.latent_size, list(config.dims), config.emb_size, config.denoiser_dropout, norm=False)
        for layer in [*self.encoders, self.decoder]:
            _xavier_zero_bias(layer)
        if fast.enabled():
            # the encoders' CSR products read W^T without a copy (fast/sparse_input.py); the decoder
            # stays row-major: oneDNN's products with it column-major are slower (docs/scaling.md)
            for layer in self.encoders:
                sparse_input.store_column_major(layer)
        for layer in self.denoiser.modules():
            if isinstance(layer, nn.Linear):
                nn.init.zeros_(layer.bias)  # weights already Xavier-normal (MLPDenoiser)
        self.batches_per_epoch = -(-n_users // config.batch_size)

    @staticmethod
    def _check_clusters(clusters, n_clusters: int, n_items: int) -> tuple[list[int], np.ndarray]:
        if clusters is None:
            raise ValueError(
                "L-DiffRec needs clusters=<int array of length n_items, cluster ids 0..n_clusters-1> "
                "(k-means on item embeddings); none was given"
            )
        ids = np.asarray(clusters)
        if ids.ndim != 1 or len(ids) != n_items:
            raise ValueError(f"clusters must be a 1-d array with one id per item ({n_items}), got shape {ids.shape}")
        if not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"clusters must hold integer ids, got dtype {ids.dtype}")
        distinct = np.unique(ids)
        if len(distinct) != n_clusters or distinct.tolist() != list(range(n_clusters)):
            raise ValueError(
                f"clusters must use every id 0..{n_clusters - 1} (n_clusters = {n_clusters}); "
                f"got {len(distinct)} distinct ids: {distinct.tolist()[:10]}"
            )
        order = np.argsort(ids, kind="stable").astype(np.int64)  # by cluster, ascending item id within
        sizes = np.bincount(ids, minlength=n_clusters).tolist()
        return sizes, order

    # ---- the model contract ------------------------------------------------------------
    def input_matrix(self, data: InteractionData) -> sp.csr_matrix:
        if self.config.temporal:
            return temporal_weights(data.train_rank, self.config.w_min, self.config.w_max)
        return data.train

    def optimizer(self) -> torch.optim.Optimizer:
        ae = [*self.encoders.parameters(), *self.decoder.parameters()]
        return torch.optim.AdamW(
            [
                {"params": ae, "lr": self.config.lr_ae},
                {"params": list(self.denoiser.parameters()), "lr": self.config.lr_denoiser},
            ],
            lr=self.config.lr_ae,
            weight_decay=self.config.weight_decay,
            fused=fast.fused_optimizer(),
        )

    def loss(self, rows: torch.Tensor, users: np.ndarray | None = None) -> torch.Tensor:
        lamda, kl_weight = self.annealing(int(self.batches_seen))
        mu, logvar = self.encode(rows)
        if self.training:
            latent = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        else:
            latent = mu
        kl = -0.5 * torch.mean(torch.sum(1 + logvar - mu.pow(2) - logvar.exp(), dim=1))
        diffusion_loss, predicted = self._diffusion_loss(latent)
        logits = self.decode(predicted)
        nll = -(F.log_softmax(logits, dim=1) * rows).sum(1).mean()
        if self.training:
            with torch.no_grad():
                self.batches_seen += 1
        return lamda * diffusion_loss + nll + kl_weight * kl

    def scoring_pass(self):
        """The folded loop's operands made once for the pass (pipeline/models/fast/diffrec.py)."""
        return fast_diffrec.scoring_pass(self.denoiser) if fast.enabled() else super().scoring_pass()

    @torch.no_grad()
    def scores(self, rows: torch.Tensor, users: np.ndarray | None = None) -> torch.Tensor:
        mu, _ = self.encode(rows)
        latent = None
        if fast.enabled():  # the same T steps, folded (pipeline/models/fast/diffrec.py)
            latent = fast_diffrec.folded_scores(self.denoiser, self.diffusion, mu, self.config.sampling_steps, sparse_rows=False)
        if latent is None:
            latent = self.diffusion.reverse(self.denoiser, mu, self.config.sampling_steps)  # the authors' loop
        return self.decode(latent)  # decoder units are in original item order


    # ---- pieces ------------------------------------------------------------------------
    def annealing(self, batches_done: int) -> tuple[float, float]:
        """(lamda_t, kl_weight) for the batch after ``batches_done`` batches (released main.py)."""
        cfg = self.config
        epochs_done = batches_done // self.batches_per_epoch
        if cfg.lamda_anneal_epochs > 0:
            lamda = max((1.0 - epochs_done / cfg.lamda_anneal_epochs) * cfg.lamda, cfg.lamda_floor)
        else:
            lamda = max(cfg.lamda, cfg.lamda_floor)
        if cfg.kl_anneal_batches > 0:
            kl_weight = min(cfg.kl_weight_max, batches_done / cfg.kl_anneal_batches)
        else:
            kl_weight = cfg.kl_weight_max
        return lamda, kl_weight

    def encode(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, logvar), each (batch, latent_size), from original-order rows; dropout in training.
        With the speed switch on, each encoder multiplies only its cluster's kept nonzero entries
        of the sparse rows (``pipeline/models/fast/sparse_input.py``)."""
        if fast.enabled():
            r, col, v = sparse_input.kept_entries(rows, self.config.ae_dropout if self.training else 0.0, normalize=False)
            cluster, col = self._item_cluster[col], self._item_column[col]
            hiddens = []
            for k, (encoder, size) in enumerate(zip(self.encoders, self.cluster_sizes)):
                mine = cluster == k  # row-major order kept
                hiddens.append(sparse_input.entries_layer(r[mine], col[mine], v[mine], (rows.shape[0], size), encoder))
        else:
            x = dropout(rows, self.config.ae_dropout, self.training)
            parts = torch.split(x.index_select(1, self.item_order), self.cluster_sizes, dim=1)
            hiddens = [encoder(part) for part, encoder in zip(parts, self.encoders)]
        mus, logvars = [], []
        for pre, lat in zip(hiddens, self.latent_dims):
            hidden = torch.tanh(pre)
            mus.append(hidden[:, :lat])
            logvars.append(hidden[:, lat:])
        return torch.cat(mus, dim=1), torch.cat(logvars, dim=1)

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """Item logits (batch, n_items) in original item order. With the speed switch on, the
        decoder's products and both of its backward products go through oneDNN
        (``pipeline/models/fast/linear.py``): torch's ``nn.Linear`` sends the input gradient,
        (batch x items) times (items x latent), to MKL, which splits the sum over the items between
        the threads, so a run's bits would depend on its thread count; oneDNN's do not."""
        if fast.enabled():
            return fast_linear.Linear.apply(latent, self.decoder.weight, self.decoder.bias)
        return self.decoder(latent)

    def _diffusion_loss(self, x_start: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """GaussianDiffusion.training_loss on the latent, also returning the predicted x0."""
        d = self.diffusion
        t, pt = d.sample_timesteps(x_start.shape[0], x_start.device)
        noise = torch.randn_like(x_start)
        x_t = d.q_sample(x_start, t, noise) if d.noise_scale != 0.0 else x_start
        predicted = self.denoiser(x_t, t)
        mse = ((x_start - predicted) ** 2).mean(dim=1)
        if self.config.reweight:
            weight = torch.where(t == 0, torch.ones_like(pt), d.snr(t - 1) - d.snr(t))
        else:
            weight = torch.ones_like(pt)
        loss = weight * mse
        if self.training:
            d.record_losses(t, loss.detach())
        return (loss / pt).mean(), predicted


class LTDiffRec(LDiffRec, key="ltdiffrec"):
    """LT-DiffRec: L-DiffRec on T-DiffRec's time-weighted rows (``temporal: true``)."""

    Config = LTDiffRecConfig
    display_name = "LT-DiffRec"
    family = "diffusion"  # the tables' row group: classic, generative or diffusion
    uses_time_order = True  # time-weighted rows
