"""DiffRec: Diffusion Recommender Model.

Reference: Wenjie Wang, Yiyan Xu, Fuli Feng, Xinyu Lin, Xiangnan He, Tat-Seng Chua.
"Diffusion Recommender Model". SIGIR 2023. arXiv:2304.04971.
Released code: github.com/YiyanXu/DiffRec (``DNN`` and ``GaussianDiffusion``).

The contract every model implements: ``pipeline/models/base.py`` (``Recommender``).

Denoiser: MLP over [dropout(x_t), Linear(sinusoidal(t))] with tanh between layers, Xavier-normal
weights; dims [200, 600] means items+emb -> 600 -> 200 -> 600 -> items.

Inference (``scores``) runs the T reverse steps exactly as the reference, but algebraically
folded: the posterior mean is linear in x_t and the denoiser's first and last layers are linear,
so x_t never has to be materialised in item space. We keep z_t = W_in x_t (first-layer width);
the last step (t = 0) has posterior coefficient c2 = 0, so the result is that step's prediction,
projected to items once. The result equals the reference loop up to float rounding (see
``scores_reference`` and its test) at about one sixth of the arithmetic for ML-1M.

The denoiser's dense products, in training and inference, go through ``pipeline.models.linear``
(oneDNN's float32 kernels on the CPU, about twice torch's default rate on this project's machine).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.models import checks as c
from pipeline.models.diffusion import SCHEDULES, DiffusionConfig, GaussianDiffusion
from pipeline.models.linear import Linear, linear, linear_add, linear_tanh, pack
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


def fast_tanh_(x: torch.Tensor) -> torch.Tensor:
    """In-place tanh; on the CPU through NumPy's SIMD kernel, several times faster than torch's
    there and as accurate (within 1 ulp)."""
    if x.device.type == "cpu" and x.dtype == torch.float32 and x.is_contiguous():
        np.tanh(x.numpy(), out=x.numpy())
        return x
    return x.tanh_()


def sparse_rows_matmul(rows: torch.Tensor, weight_t: torch.Tensor) -> torch.Tensor:
    """``rows @ weight_t`` for sparse (mostly zero) dense rows, summing only the nonzero
    entries' weight rows (an embedding bag): a third of the dense product's time on ML-1M."""
    r, c = rows.nonzero(as_tuple=True)
    offsets = torch.searchsorted(r, torch.arange(rows.shape[0], device=rows.device))
    return F.embedding_bag(c, weight_t, offsets, mode="sum", per_sample_weights=rows[r, c])


class FirstLayer(torch.autograd.Function):
    """The denoiser's first layer, ``Linear`` over ``[x, emb]``, skipping work autograd would do.

    When ``x`` needs no gradient (DiffRec: x is the noised data row) autograd would still compute
    the gradient of the whole concatenated input, batch x (items + emb), as costly as the layer
    itself, because ``emb`` needs one; here only the ``emb`` columns are computed (about 12 % of
    an ML-1M epoch). When ``x`` needs one (L-DiffRec: x is the encoder's latent) the whole input
    gradient is computed. Products through ``linear`` (oneDNN on the CPU).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, emb: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        h = torch.cat([x, emb], dim=-1)
        ctx.save_for_backward(h, weight)
        ctx.n_x = x.shape[1]
        return linear(h, weight, bias)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        h, weight = ctx.saved_tensors
        n_x = ctx.n_x
        grad_x = grad_emb = None
        if ctx.needs_input_grad[0]:
            grad_h = linear(grad, weight.t())
            grad_x, grad_emb = grad_h[:, :n_x], grad_h[:, n_x:]
        elif ctx.needs_input_grad[1]:
            grad_emb = grad.mm(weight[:, n_x:])  # (batch, emb): tiny; a strided slice slows oneDNN
        grad_weight = linear(grad.t(), h.t()) if ctx.needs_input_grad[2] else None
        grad_bias = grad.sum(0) if ctx.needs_input_grad[3] else None
        return grad_x, grad_emb, grad_weight, grad_bias


class MLPDenoiser(nn.Module):
    """DiffRec's DNN with time_type 'cat'."""

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
        emb = self.emb_layer(timestep_embedding(t, self.emb_size))
        if self.norm:
            x = F.normalize(x)
        first = self.in_layers[0]
        h = torch.tanh(FirstLayer.apply(self._drop(x), emb, first.weight, first.bias))
        for layer in self.in_layers[1:]:
            h = torch.tanh(Linear.apply(h, layer.weight, layer.bias))
        for i, layer in enumerate(self.out_layers):
            h = Linear.apply(h, layer.weight, layer.bias)
            if i != len(self.out_layers) - 1:
                h = torch.tanh(h)
        return h

    def _drop(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.dropout, self.training)


def _same_values(saved: list[torch.Tensor], current: list[torch.Tensor]) -> bool:
    """Whether ``current`` are bit for bit the tensors ``saved`` (same shapes, dtypes, devices)."""
    return len(saved) == len(current) and all(
        a.shape == b.shape and a.dtype == b.dtype and a.device == b.device and torch.equal(a, b)
        for a, b in zip(saved, current)
    )


@dataclass
class _Step:
    """One reverse step of the folded inference: y <- [y +] h(scale * y + pre_bias) weight^T."""

    pre_bias: torch.Tensor  # (h0,) added to scale * y: time term and the folded output bias
    scale: float
    weight: torch.Tensor  # (h0, h0) W_in W_out times the step's coefficient, packed
    accumulate: bool  # False where c2 = 0: the step's result replaces y


@dataclass
class _InferencePlan:
    """The eval-mode operands of ``DiffRec.scores`` (``DiffRec._make_plan``)."""

    w_in_t: torch.Tensor  # (items, h0) first layer, for the sparse first projection
    steps: list[_Step]  # t = T-1 .. 1
    hidden: list[tuple[torch.Tensor, torch.Tensor]]  # hidden layers (packed weight, bias)
    last_pre_bias: torch.Tensor
    last_scale: float
    last_c1: float
    w_out: torch.Tensor  # (items, h_last) packed
    out_bias: torch.Tensor  # b_out * c1 of the last step


class DiffRec(Recommender, key="diffrec"):
    Config = DiffRecConfig
    display_name = "DiffRec"
    family = "diffusion"  # the tables' row group: classic, generative or diffusion

    def __init__(self, config: DiffRecConfig, n_users: int, n_items: int, **side):
        super().__init__()  # side inputs (data, clusters) are not used by DiffRec
        self.config = config
        self.n_users, self.n_items = n_users, n_items
        self.diffusion = GaussianDiffusion(
            steps=config.steps,
            noise_scale=config.noise_scale,
            noise_min=config.noise_min,
            noise_max=config.noise_max,
            schedule=config.schedule,
            max_beta=config.max_beta,
            beta_fixed=config.beta_fixed,
            history=config.history_num_per_term,
            uniform_prob=config.uniform_prob,
        )
        self.denoiser = MLPDenoiser(n_items, list(config.dims), config.emb_size, config.dropout, config.norm)
        self._plan_cache: tuple[list[torch.Tensor], _InferencePlan | None] | None = None

    def __getstate__(self) -> dict:
        """Copies and pickles leave the inference cache out (oneDNN's packed weights cannot be
        copied; the copy makes its own when it scores)."""
        state = dict(super().__getstate__())
        state["_plan_cache"] = None
        return state


    def optimizer(self) -> torch.optim.Optimizer:
        # fused: one kernel per step instead of a loop over parameters (7 % of an ML-1M epoch)
        return torch.optim.AdamW(
            self.denoiser.parameters(), lr=self.config.lr, weight_decay=self.config.weight_decay, fused=True
        )

    def loss(self, rows: torch.Tensor, users: np.ndarray | None = None) -> torch.Tensor:
        return self.diffusion.training_loss(self.denoiser, rows, self.config.reweight)

    @torch.no_grad()
    def scores_reference(self, rows: torch.Tensor, users: np.ndarray | None = None) -> torch.Tensor:
        return self.diffusion.reverse(self.denoiser, rows, self.config.sampling_steps)

    @torch.no_grad()
    def scores(self, rows: torch.Tensor, users: np.ndarray | None = None) -> torch.Tensor:
        if self.config.norm or self.training:
            return self.scores_reference(rows, users)
        plan = self._inference_plan(rows.shape[0])
        if plan is None:  # not a DDPM posterior (there alpha-bar before t = 0 is 1, so c2 = 0)
            return self.scores_reference(rows, users)
        x0 = self.diffusion.start_point(rows, self.config.sampling_steps)
        y = sparse_rows_matmul(x0, plan.w_in_t) if self.config.sampling_steps == 0 else x0 @ plan.w_in_t
        for step in plan.steps:
            h = self._hidden(torch.add(step.pre_bias, y, alpha=step.scale), plan.hidden)
            y = linear_add(h, step.weight, y) if step.accumulate else linear(h, step.weight)
        # last step (t = 0): c2 = 0, so the result is c1 x0_pred, the denoiser's output
        h = self._hidden(torch.add(plan.last_pre_bias, y, alpha=plan.last_scale), plan.hidden)
        return linear(h.mul_(plan.last_c1), plan.w_out, plan.out_bias)

    @staticmethod
    def _hidden(first: torch.Tensor, hidden_layers) -> torch.Tensor:
        """The denoiser's hidden activations from its first layer's pre-activation (in place)."""
        h = fast_tanh_(first)
        for weight, bias in hidden_layers:
            h = linear_tanh(h, weight, bias)
        return h

    @torch.no_grad()
    def _inference_plan(self, rows: int) -> _InferencePlan | None:
        """The eval-mode operands of ``scores``, made once and reused while the denoiser's weights
        stay bit-for-bit those they were made from (the evaluation scores users in chunks; an
        optimizer step or ``load_state_dict`` changes the weights; fused AdamW leaves the tensors'
        version counters alone, so the check compares values: about 2 % of a chunk on ML-1M)."""
        weights = list(self.denoiser.parameters())
        if self._plan_cache is not None and _same_values(self._plan_cache[0], weights):
            return self._plan_cache[1]
        self._plan_cache = None  # frees the old operands before the new ones are made (peak memory)
        plan = self._make_plan(rows)
        self._plan_cache = ([w.detach().clone() for w in weights], plan)
        return plan

    def _make_plan(self, rows: int) -> _InferencePlan | None:
        """Fold the reverse loop (see the module docstring) into per-step operands.

        x_t = a x0 + W_out H + coef_fold b_out for some a and H. Its first-layer image W_in x_t,
        less the bias part coef_fold W_in b_out (added to the step's time term W_emb emb(t) + b_in
        instead of to every row), is kept as scale * y: a step's update c2 z + c1 W_in W_out h is
        then one product added to y (``linear_add``), with c1 and scale (the product of the c2 so far) in
        the step's weight. Weights are packed for oneDNN (``pack``; values unchanged)."""
        den = self.denoiser
        first, last = den.in_layers[0], den.out_layers[-1]
        w_in, w_emb = first.weight[:, : self.n_items], first.weight[:, self.n_items :]
        coefficients = []
        for t, c1, c2 in self.diffusion.reverse_coefficients():
            t_vec = torch.full((1,), t, dtype=torch.long, device=w_in.device)
            time_term = (den.emb_layer(timestep_embedding(t_vec, den.emb_size)) @ w_emb.T + first.bias)[0]
            coefficients.append((time_term, float(np.float32(c1)), float(np.float32(c2))))  # float32, as the reference
        *earlier, (last_term, last_c1, last_c2) = coefficients
        if last_c2 != 0.0:
            return None
        fold, fold_bias = linear(w_in, last.weight.T), w_in @ last.bias
        steps = []
        scale, coef_fold = 1.0, 0.0
        for time_term, c1, c2 in earlier:
            pre_bias, pre_scale = time_term + coef_fold * fold_bias, scale
            if c2 == 0.0:  # (noise_scale 0: every step) the past drops out
                weight, accumulate, scale = fold, False, c1
            else:
                scale *= c2
                weight, accumulate = fold * (c1 / scale), True
            steps.append(_Step(pre_bias, pre_scale, pack(weight, rows), accumulate))
            coef_fold = c2 * coef_fold + c1
        hidden = [(pack(layer.weight, rows), layer.bias) for layer in [*den.in_layers[1:], *den.out_layers[:-1]]]
        return _InferencePlan(
            w_in_t=w_in.T.contiguous(),
            steps=steps,
            hidden=hidden,
            last_pre_bias=last_term + coef_fold * fold_bias,
            last_scale=scale,
            last_c1=last_c1,
            w_out=pack(last.weight, rows),
            out_bias=last.bias * last_c1,
        )

