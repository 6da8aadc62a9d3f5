"""Gaussian diffusion over interaction rows, as in DiffRec (Wang et al., SIGIR 2023, arXiv 2304.04971).

Shared by DiffRec, T-DiffRec and the latent variants. Everything follows the reference
protocol (``../shared/reference/README.md``):

* schedule "linear-var": 1 - alpha_bar_t = linspace(scale*min, scale*max, T); beta_t derived
  from consecutive alpha_bar and capped at ``max_beta``; optionally beta_1 fixed to 1e-5;
  "linear" takes the linspace as the betas themselves;
* x0-prediction; per-user MSE over items, reweighted by SNR(t-1) - SNR(t) (1 at t = 0);
* timesteps uniform until every t has ``history`` recorded losses, then importance sampling
  p_t ∝ sqrt(mean of the last ``history`` squared losses), mixed (1-u) p + u/T, loss / (p_t T);
* inference: posterior mean with the predicted x0 at every reverse step, no sampling noise.

The loss history is kept in buffers, so it is part of the model's state dict and a resumed run
samples the same timesteps as an uninterrupted one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

BETA_FIXED_VALUE = 1e-5  # DiffRec's beta_1 when beta_fixed is on
SCHEDULES = ("linear", "linear-var")


# ---- the shared hyperparameters, with the authors' defaults --------------------------------
# The model configs that run this diffusion inherit these fields (DiffRec, T-DiffRec, L-DiffRec,
# LT-DiffRec: DiffusionConfig; MultiDAE++: NoiseScheduleConfig) and override a default where
# their authors' differs; params.yaml (models.<variant>.defaults / per_split / grid) overrides
# them per variant, split or grid point. The values are DiffRec's released ML-1M clean setting.
#
# Field order: a dataclass lists its bases' fields first, from the last base to the first, then
# its own. The order is that of the config saved in every model.pt (dataclasses.asdict), so a
# model config names its own leading fields in a last base (e.g. DiffRecConfig(DiffusionConfig,
# _DiffRecHead)) to keep the order it had before these were shared.


@dataclass(frozen=True)
class NoiseScheduleConfig:
    """The forward process's noise schedule: the arguments of :func:`betas_for`."""

    schedule: str = "linear-var"
    steps: int = 40  # T
    noise_scale: float = 0.005
    noise_min: float = 0.005
    noise_max: float = 0.01
    max_beta: float = 0.999
    beta_fixed: bool = True  # beta_1 = BETA_FIXED_VALUE


@dataclass(frozen=True)
class _MeanType:
    mean_type: str = "x0"  # what the denoiser predicts (only x0 is implemented)


@dataclass(frozen=True)
class DiffusionConfig(NoiseScheduleConfig, _MeanType):
    """:class:`GaussianDiffusion`'s hyperparameters: mean_type, the noise schedule, then these."""

    reweight: bool = True  # SNR(t-1) - SNR(t) loss weights
    sampling_steps: int = 0  # reverse steps at inference (0: score the unnoised row)
    history_num_per_term: int = 10  # losses kept per timestep for importance sampling
    uniform_prob: float = 0.001  # u of the (1-u) p + u/T timestep mixture


def betas_for(schedule: str, steps: int, scale: float, low: float, high: float, max_beta: float) -> np.ndarray:
    start, end = scale * low, scale * high
    if schedule == "linear":
        return np.linspace(start, end, steps, dtype=np.float64)
    if schedule != "linear-var":
        raise ValueError(f"unknown noise schedule {schedule!r}; allowed: {list(SCHEDULES)}")
    alpha_bar = 1.0 - np.linspace(start, end, steps, dtype=np.float64)
    betas = [1.0 - alpha_bar[0]]
    for i in range(1, steps):
        betas.append(min(1.0 - alpha_bar[i] / alpha_bar[i - 1], max_beta))
    return np.array(betas, dtype=np.float64)


class GaussianDiffusion(nn.Module):
    def __init__(
        self,
        steps: int,
        noise_scale: float,
        noise_min: float,
        noise_max: float,
        schedule: str = "linear-var",
        max_beta: float = 0.999,
        beta_fixed: bool = True,
        history: int = 10,
        uniform_prob: float = 0.001,
    ):
        super().__init__()
        self.steps = steps
        self.noise_scale = noise_scale
        self.history = history
        self.uniform_prob = uniform_prob
        betas = torch.tensor(betas_for(schedule, steps, noise_scale, noise_min, noise_max, max_beta), dtype=torch.float64)
        if beta_fixed:
            betas[0] = BETA_FIXED_VALUE
        if noise_scale != 0.0 and not ((betas > 0) & (betas <= 1)).all():
            raise ValueError(f"betas out of range (0, 1]: {betas.tolist()}")
        alphas = 1.0 - betas
        acp = torch.cumprod(alphas, 0)
        acp_prev = torch.cat([torch.ones(1, dtype=torch.float64), acp[:-1]])
        self.register_buffer("betas", betas, persistent=False)
        self.register_buffer("alphas_cumprod", acp, persistent=False)
        self.register_buffer("sqrt_alphas_cumprod", acp.sqrt(), persistent=False)
        self.register_buffer("sqrt_one_minus_alphas_cumprod", (1.0 - acp).sqrt(), persistent=False)
        self.register_buffer("posterior_mean_coef1", betas * acp_prev.sqrt() / (1.0 - acp), persistent=False)
        self.register_buffer("posterior_mean_coef2", (1.0 - acp_prev) * alphas.sqrt() / (1.0 - acp), persistent=False)
        # importance-sampling state: part of the checkpoint
        self.register_buffer("loss_history", torch.zeros(steps, history, dtype=torch.float64))
        self.register_buffer("loss_count", torch.zeros(steps, dtype=torch.long))

    @classmethod
    def from_config(cls, config: NoiseScheduleConfig, **overrides) -> GaussianDiffusion:
        """The process ``config`` describes: its noise schedule (:class:`NoiseScheduleConfig`'s
        fields) and, for a :class:`DiffusionConfig`, its importance sampling (``history``,
        ``uniform_prob``); ``overrides`` replace any of these arguments."""
        args = {name: getattr(config, name)
                for name in ("steps", "noise_scale", "noise_min", "noise_max", "schedule", "max_beta", "beta_fixed")}
        if isinstance(config, DiffusionConfig):
            args.update(history=config.history_num_per_term, uniform_prob=config.uniform_prob)
        return cls(**{**args, **overrides})

    # ---- forward process -------------------------------------------------------------
    def q_sample(self, x_start: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        a = self.sqrt_alphas_cumprod[t].float().unsqueeze(1)
        b = self.sqrt_one_minus_alphas_cumprod[t].float().unsqueeze(1)
        return a * x_start + b * noise

    def snr(self, t: torch.Tensor) -> torch.Tensor:
        acp = self.alphas_cumprod[t]
        return acp / (1.0 - acp)

    # ---- timestep sampling -------------------------------------------------------------
    def sample_timesteps(self, batch: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if not bool((self.loss_count == self.history).all()):
            t = torch.randint(0, self.steps, (batch,), device=device)
            return t, torch.ones(batch, dtype=torch.float64, device=device)
        lt_sqrt = torch.sqrt(torch.mean(self.loss_history**2, dim=-1))
        pt_all = lt_sqrt / lt_sqrt.sum()
        pt_all = pt_all * (1.0 - self.uniform_prob) + self.uniform_prob / self.steps
        t = torch.multinomial(pt_all, batch, replacement=True)
        return t, pt_all.gather(0, t) * self.steps

    @torch.no_grad()
    def record_losses(self, t: torch.Tensor, losses: torch.Tensor) -> None:
        """Append losses to each timestep's history (in batch order), keeping the newest ``history``."""
        # NumPy on the CPU (torch's per-call overhead made this loop a visible part of an epoch);
        # on a GPU the small buffers go through the CPU and back
        history, counts = self.loss_history.cpu(), self.loss_count.cpu()  # on the CPU: the buffers themselves
        hist_np, counts_np = history.numpy(), counts.numpy()
        t_np, losses_np = t.cpu().numpy(), losses.cpu().numpy().astype(np.float64)
        for step in np.unique(t_np):
            merged = np.concatenate([hist_np[step, : counts_np[step]], losses_np[t_np == step]])[-self.history :]
            hist_np[step, : len(merged)] = merged
            counts_np[step] = len(merged)
        if self.loss_history.device.type != "cpu":
            self.loss_history.copy_(history)
            self.loss_count.copy_(counts)

    # ---- training loss -----------------------------------------------------------------
    def training_loss(self, denoiser: nn.Module, x_start: torch.Tensor, reweight: bool) -> torch.Tensor:
        t, pt = self.sample_timesteps(x_start.shape[0], x_start.device)
        noise = torch.randn_like(x_start)
        x_t = self.q_sample(x_start, t, noise) if self.noise_scale != 0.0 else x_start
        predicted = denoiser(x_t, t)
        mse = F.mse_loss(predicted, x_start, reduction="none").mean(dim=1)  # one kernel each way
        if reweight:
            weight = torch.where(t == 0, torch.ones_like(pt), self.snr(t - 1) - self.snr(t))
        else:
            weight = torch.ones_like(pt)
        loss = weight * mse
        self.record_losses(t, loss.detach())
        return (loss / pt).mean()

    # ---- reverse process (reference loop) --------------------------------------------------
    @torch.no_grad()
    def reverse(self, denoiser: nn.Module, x_start: torch.Tensor, sampling_steps: int) -> torch.Tensor:
        """The authors' inference loop, one denoiser call per step (kept as the reference)."""
        x_t = self.start_point(x_start, sampling_steps)
        for i in reversed(range(self.steps)):
            t = torch.full((x_t.shape[0],), i, dtype=torch.long, device=x_t.device)
            x0 = denoiser(x_t, t)
            if self.noise_scale == 0.0:
                x_t = x0
            else:
                x_t = self.posterior_mean_coef1[i].float() * x0 + self.posterior_mean_coef2[i].float() * x_t
        return x_t

    def start_point(self, x_start: torch.Tensor, sampling_steps: int) -> torch.Tensor:
        if sampling_steps == 0:
            return x_start
        t = torch.full((x_start.shape[0],), sampling_steps - 1, dtype=torch.long, device=x_start.device)
        return self.q_sample(x_start, t, torch.randn_like(x_start))

    def reverse_coefficients(self) -> list[tuple[int, float, float]]:
        """(t, coefficient of predicted x0, coefficient of x_t) for t = T-1 .. 0."""
        out = []
        for i in reversed(range(self.steps)):
            if self.noise_scale == 0.0:
                out.append((i, 1.0, 0.0))
            else:
                out.append((i, float(self.posterior_mean_coef1[i]), float(self.posterior_mean_coef2[i])))
        return out
