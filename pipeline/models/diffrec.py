"""DiffRec: Diffusion Recommender Model.

Reference: Wenjie Wang, Yiyan Xu, Fuli Feng, Xinyu Lin, Xiangnan He, Tat-Seng Chua.
"Diffusion Recommender Model". SIGIR 2023. arXiv:2304.04971.
Released code: github.com/YiyanXu/DiffRec (``DNN`` and ``GaussianDiffusion``).

The contract every model implements: ``pipeline/models/base.py`` (``Recommender``). The Gaussian
diffusion (schedule, x0-prediction loss, importance sampling of timesteps, the reverse loop) is
``pipeline/models/diffusion.py``, shared with T-DiffRec and the latent variants.

This file is the readable model, in the order of the paper and the released code:

* denoiser (the release's ``DNN`` with time_type "cat"): an MLP over [dropout(x_t), Linear(
  sinusoidal(t))] with tanh between layers and Xavier-normal weights; dims [200, 600] means
  items+emb -> 600 -> 200 -> 600 -> items (:class:`MLPDenoiser`);
* loss: ``GaussianDiffusion.training_loss``, the per-user MSE between the denoiser's predicted
  x0 and the row, SNR-reweighted, divided by the timestep's sampling probability;
* ``scores``: all T reverse steps from the (unnoised, for sampling_steps 0) train row, each
  taking the posterior mean with the predicted x0 and no sampling noise
  (``GaussianDiffusion.reverse``, the release's ``p_sample``); the items are ranked by the result.

Where this differs from the released code, on purpose:

* x0-prediction only (``mean_type`` "x0", the setting of every released result) and the "cat"
  time embedding only;
* the input dropout draws its mask with ``torch.rand`` instead of ``bernoulli_``
  (``layers.dropout``: the same distribution, another random stream);
* the optimizer is AdamW over the denoiser's parameters with torch's fused kernel (one kernel per
  step instead of a loop over parameters; the same update up to float rounding);
* boolean flags are real booleans (the release parses them with ``type=bool``, so ``--reweight=0``
  means true).

Speed: with the switch of ``pipeline/models/fast`` on (params.yaml ``training.fast``, the default,
with which the committed results were made) the denoiser's products run through oneDNN and
``scores`` runs the same T steps algebraically folded (``pipeline/models/fast/diffrec.py``). The
results agree with this file's computation up to float32 rounding (``tests/test_fast_paths.py``);
the model and its state dict are the same either way.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.models import checks as c
from pipeline.models import fast
from pipeline.models.diffusion import SCHEDULES, DiffusionConfig, GaussianDiffusion
from pipeline.models.fast import diffrec as fast_diffrec
from pipeline.models.base import Recommender
from pipeline.models.layers import dropout, timestep_embedding, xavier_normal_


@dataclass(frozen=True)
class _DiffRecHead:
    """DiffRecConfig's leading fields (see the field-order note in pipeline/models/diffusion.py)."""

    lr: float = 0.001
    weight_decay: float = 0.0
    batch_size: int = 400
    epochs: int = 1000  # the protocol's cap; early stopping (training.patience) ends runs before
    dims: list = field(default_factory=lambda: [200, 600])  # denoiser hidden dims
    emb_size: int = 10  # timestep embedding width
    dropout: float = 0.5  # on the denoiser's x_t
    norm: bool = False  # L2-normalise the denoiser input


@dataclass(frozen=True)
class DiffRecConfig(DiffusionConfig, _DiffRecHead):
    """The authors' defaults (DiffRec's ML-1M clean setting); the diffusion fields and their
    defaults come from :class:`~pipeline.models.diffusion.DiffusionConfig`."""

    def problems(self) -> list[tuple[str | tuple[str, ...], str]]:
        """(key or keys involved, message) for every impossible value (types are checked before)."""
        out = [
            *c.positive(self, "lr"),
            *c.non_negative(self, "weight_decay"),
            *c.counts(self, "batch_size", "epochs", "steps", "emb_size", "history_num_per_term"),
            *c.dims(self),
            *c.fractions(self, "dropout"),
        ]
        if self.mean_type != "x0":
            out.append(("mean_type", f"{self.mean_type!r} is not supported; allowed values: ['x0']"))
        out += c.one_of(self, "schedule", SCHEDULES)
        out += c.non_negative(self, "noise_scale")
        out += c.noise_bounds(self)
        if not 0 < self.max_beta < 1:
            out.append(("max_beta", f"must be in (0, 1), got {self.max_beta}"))
        if not 0 <= self.sampling_steps <= self.steps if isinstance(self.steps, int) else False:
            out.append(("sampling_steps", f"must be in [0, steps={self.steps}], got {self.sampling_steps}"))
        return out + c.unit_interval(self, "uniform_prob")


class MLPDenoiser(nn.Module):
    """DiffRec's DNN with time_type 'cat': predicts x0 from x_t and the timestep t."""

    def __init__(self, n_items: int, dims: list[int], emb_size: int, dropout: float, norm: bool):
        super().__init__()
        out_dims = list(dims) + [n_items]
        in_dims = out_dims[::-1]
        in_widths = [in_dims[0] + emb_size] + in_dims[1:]
        self.emb_size = emb_size
        self.norm = norm
        self.emb_layer = nn.Linear(emb_size, emb_size)
        self.in_layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(in_widths[:-1], in_widths[1:]))
        self.out_layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(out_dims[:-1], out_dims[1:]))
        self.dropout = dropout
        for layer in [self.emb_layer, *self.in_layers, *self.out_layers]:
            xavier_normal_(layer)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        emb = self.emb_layer(timestep_embedding(t, self.emb_size).to(self.emb_layer.weight.dtype))  # float64 too
        if self.norm:
            x = F.normalize(x)
        x = dropout(x, self.dropout, self.training)
        if fast.enabled():
            return fast_diffrec.mlp(x, emb, self.in_layers, self.out_layers)
        h = torch.cat([x, emb], dim=-1)
        for layer in self.in_layers:
            h = torch.tanh(layer(h))
        for i, layer in enumerate(self.out_layers):
            h = layer(h)
            if i != len(self.out_layers) - 1:
                h = torch.tanh(h)
        return h


class DiffRec(Recommender, key="diffrec"):
    Config = DiffRecConfig
    display_name = "DiffRec"
    family = "diffusion"  # the tables' row group: classic, generative or diffusion

    def __init__(self, config: DiffRecConfig, n_users: int, n_items: int, **side):
        super().__init__()  # side inputs (data, clusters) are not used by DiffRec
        self.config = config
        self.n_users, self.n_items = n_users, n_items
        self.diffusion = GaussianDiffusion.from_config(config)
        self.denoiser = MLPDenoiser(n_items, list(config.dims), config.emb_size, config.dropout, config.norm)

    def optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(
            self.denoiser.parameters(), lr=self.config.lr, weight_decay=self.config.weight_decay, fused=True
        )

    def loss(self, rows: torch.Tensor, users: np.ndarray | None = None) -> torch.Tensor:
        return self.diffusion.training_loss(self.denoiser, rows, self.config.reweight)

    def scoring_pass(self):
        """The folded loop's operands made once for the pass (pipeline/models/fast/diffrec.py)."""
        return fast_diffrec.scoring_pass(self.denoiser) if fast.enabled() else super().scoring_pass()

    @torch.no_grad()
    def scores(self, rows: torch.Tensor, users: np.ndarray | None = None) -> torch.Tensor:
        if fast.enabled():  # the same T steps, folded (pipeline/models/fast/diffrec.py)
            folded = fast_diffrec.folded_scores(self.denoiser, self.diffusion, rows, self.config.sampling_steps)
            if folded is not None:
                return folded
        return self.diffusion.reverse(self.denoiser, rows, self.config.sampling_steps)  # the authors' loop
