"""MultiDAE++: MultiDAE trained to undo DiffRec's Gaussian corruption (DiffRec's own baseline).

Reference: Wenjie Wang, Yiyan Xu, Fuli Feng, Xinyu Lin, Xiangnan He, Tat-Seng Chua.
"Diffusion Recommender Model". SIGIR 2023. arXiv:2304.04971, Section 4 (baselines): MultiDAE++
is a baseline the DiffRec authors designed themselves: MultiDAE (Liang et al., WWW 2018) fed
interactions corrupted with noise added the way DiffRec adds it, and trained to recover the clean
interactions, i.e. a one-step denoiser without DiffRec's multi-step reverse process. The paper
gives only this one-line description in its baseline list (we could not check its exact wording
against the paper text when writing this) and the authors' repository (YiyanXu/DiffRec) has no
baseline code, so the concrete recipe below is our reading of it, not a transcription.

What is implemented (training, per batch of clean rows x_0):
  * t ~ Uniform{0, ..., steps - 1} per user (torch's global generator);
  * x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps, eps ~ N(0, I), with DiffRec's own
    noise schedule (``GaussianDiffusion`` of ``pipeline/models/diffusion.py``: "linear-var",
    noise_scale / noise_min / noise_max / max_beta, beta_1 fixed to 1e-5 when ``beta_fixed``);
  * MultiDAE's network on x_t (L2 normalisation, input dropout, tanh MLP; no time input);
  * loss = MultiDAE's multinomial NLL against the CLEAN row x_0 + reg_weight * sum ||W||^2.
Inference: the clean train row goes through the network once (no noise, dropout off), as DiffRec
infers from the unnoised row when sampling_steps = 0 (its released best settings).
Timesteps are sampled uniformly: the importance sampling of DiffRec's loss is not used (there is
no per-timestep loss to balance in a single-step denoiser), so the diffusion module's loss
history buffers stay unused (they are in the state dict, with history length 1).
With the speed switch on, scoring (the clean sparse rows) and Adam take MultiDAE's fast path;
training on the dense noised rows keeps the readable products.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from pipeline.models import checks as c
from pipeline.models.diffusion import SCHEDULES, GaussianDiffusion, NoiseScheduleConfig
from pipeline.models.multidae import MultiDAE, MultiDAEConfig, dense_input_stack, multinomial_nll


@dataclass(frozen=True)
class MultiDAEPPConfig(NoiseScheduleConfig, MultiDAEConfig):
    """MultiDAE's fields and defaults, then DiffRec's noise schedule and its defaults
    (:class:`~pipeline.models.diffusion.NoiseScheduleConfig`)."""

    def problems(self) -> list[tuple[str | tuple[str, ...], str]]:
        out = super().problems() + c.one_of(self, "schedule", SCHEDULES) + c.counts(self, "steps")
        if self.noise_scale <= 0:
            out.append(("noise_scale", f"must be > 0 (0 is plain MultiDAE), got {self.noise_scale}"))
        out += c.noise_bounds(self)
        if not 0 < self.max_beta < 1:
            out.append(("max_beta", f"must be in (0, 1), got {self.max_beta}"))
        if not self.noise_scale * self.noise_max < 1:
            out.append((("noise_scale", "noise_max"), f"need noise_scale * noise_max < 1, got {self.noise_scale * self.noise_max}"))
        return out


class MultiDAEPP(MultiDAE, key="multidaepp"):
    Config = MultiDAEPPConfig
    display_name = "MultiDAE++"
    family = "generative"  # the tables' row group: classic, generative or diffusion
    # it trains on dense noised rows through the readable product, which MKL runs slower with a
    # column-major weight (docs/benchmarks.md): the first layer stays row-major
    column_major_input = False

    def __init__(self, config: MultiDAEPPConfig, n_users: int, n_items: int, **side):
        super().__init__(config, n_users, n_items, **side)
        self.diffusion = GaussianDiffusion.from_config(config, history=1)  # importance sampling is not used

    def loss(self, rows: torch.Tensor, users: np.ndarray | None = None) -> torch.Tensor:
        t = torch.randint(0, self.config.steps, (rows.shape[0],), device=rows.device)
        noisy = self.diffusion.q_sample(rows, t, torch.randn_like(rows))
        # MultiDAE's network on the dense noised rows (no sparse input here)
        logits = dense_input_stack(self.layers, noisy, self.config.dropout, self.training)
        return multinomial_nll(logits, rows) + self.l2_penalty()
