"""TV-Diff's speed-ups (the speed switch's paths): the folded inference of
``pipeline.models.tvdiff.TVDiff.scores`` and the pair-batch loss of ``TVDiff.pair_loss``.

The pair loss. A pair batch has B rows of its users' full train rows (B = 2,048, |I| up to
17,503 on lastfm), and the readable loss forms the B x |I| prediction x^ = h_u h_i^T, then its
squared error to x_0: three B x d x |I| products (forward, and the gradients of h_u and h_i),
the largest part of a step. The bpr free energy needs x^ at two entries per row only, and the
squared error expands: sum_i (x_0 - x^)_i^2 = h_u G h_u^T - 2 h_u . (x_0 h_i) + |x_0|^2 with
G = h_i^T h_i (d x d, formed once per batch). x_0 h_i is a sum over the row's train items (an
embedding bag), x^ at the positive and negative a row-wise dot product. Cost: one |I| x d x d
product for G and one for its gradient, instead of three B x d x |I| ones (|I| d^2 < B d |I|
when d < B), and no B x |I| prediction or gradient in memory. The random draws (timesteps,
noise, dropout mask, negatives) are the readable loss's, in its order; the two agree up to
float rounding (``tests/test_fast_paths.py``). AR-GSP needs every row's scores for its
candidates: there the prediction is formed without a gradient.

The released inference runs T reverse posterior-mean steps from the clean row, each a full
denoiser call in item space. In eval mode the chain is linear where it matters: the posterior
mean is linear in x_t, the user tower's first layer is linear in x_t (z_t = x_t W_0) and the
prediction is linear in the last hidden layer (x_0 = h h_i^T). So the chain runs on z_t (d_0
columns) with M = h_i^T W_0: z_{t-1} = c1 h_t M + c2 z_t, and x_0 = (prod c2) x_T + (sum of the
weighted hidden states) h_i^T is formed once at the end. The item tower h_i and M depend on the
weights only; they are computed once per weight version and reused across the user chunks of an
evaluation pass. The result equals the step-by-step loop up to float rounding
(``tests/test_tvdiff.py`` compares them).
"""

from __future__ import annotations

import weakref

import numpy as np
import torch
from torch import nn

from pipeline.models.fast.diffrec import sparse_rows_matmul

_CACHES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> (weight versions, (h_i, M))


def _folded_operands(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """(h_i = item_tower(), M = h_i^T W_0) without gradients, reused while the weights are
    unchanged (the optimiser step and load_state_dict bump the tensor versions)."""
    den = model.denoiser
    weights = [*den.user_weights, den.item_weights[0]]
    key = tuple((w._version, w.data_ptr(), w.device) for w in weights)
    cached = _CACHES.get(model)
    if cached is None or cached[0] != key:
        with torch.no_grad():
            item_h = den.item_tower()
            cached = (key, (item_h, item_h.T @ den.item_weights[0]))
        _CACHES[model] = cached
    return cached[1]


@torch.no_grad()
def folded_scores(model: nn.Module, rows: torch.Tensor) -> torch.Tensor:
    """The T reverse steps of ``model`` (a TVDiff in eval mode) from ``rows``, folded."""
    den = model.denoiser
    item_h, fold = _folded_operands(model)
    z = rows @ den.item_weights[0]
    hidden_sum = torch.zeros(rows.shape[0], item_h.shape[1], dtype=rows.dtype, device=rows.device)
    coef_x = 1.0
    for t, c1, c2 in model.diffusion.reverse_coefficients():
        t_vec = torch.full((1,), t, dtype=torch.long, device=rows.device)
        h = den.user_tower(z + den.time_term(t_vec))
        c1f, c2f = float(np.float32(c1)), float(np.float32(c2))  # the reference applies float32 coefficients
        z = torch.addmm(z, h, fold, beta=c2f, alpha=c1f)
        hidden_sum.mul_(c2f).add_(h, alpha=c1f)
        coef_x *= c2f
    return coef_x * rows + hidden_sum @ item_h.T


class Gram(torch.autograd.Function):
    """G = H^T H with the gradient H (dG + dG^T): one product backward (autograd's generic
    rule for a product takes two)."""

    @staticmethod
    def forward(ctx, h: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(h)
        return h.T @ h

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (h,) = ctx.saved_tensors
        return h @ (grad + grad.T)


def pair_loss(model: nn.Module, rows: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """``TVDiff.pair_loss`` (the bpr free energy of a pair batch) without the B x |I|
    prediction: the squared error through G = h_i^T h_i, x^ at the positives and negatives by
    row-wise dot products (see the module docstring). Same draws as the readable loss."""
    cfg, den, diffusion = model.config, model.denoiser, model.diffusion
    if cfg.loss_type != "bpr":
        raise ValueError(f"TV-Diff: pair batches are the bpr form's, not {cfg.loss_type!r}'s")
    x0 = rows
    t = torch.randint(0, cfg.steps, (x0.shape[0],), device=x0.device)
    x_t = torch.randn_like(x0)  # the noise, turned into x_t (then its dropout) in place
    if cfg.noise_scale != 0.0:
        a = diffusion.sqrt_alphas_cumprod[t].float().unsqueeze(1)
        b = diffusion.sqrt_one_minus_alphas_cumprod[t].float().unsqueeze(1)
        x_t.mul_(b).add_(a * x0)
    else:
        x_t = x0.clone()
    item_h = den.item_tower()
    if den.training and den.dropout > 0.0:
        keep = torch.rand_like(x_t) >= den.dropout
        x_t.mul_(keep).div_(1.0 - den.dropout)
    h_u = den.user_tower(x_t @ den.item_weights[0] + den.time_term(t))
    del x_t
    gram = Gram.apply(item_h)
    squares = ((h_u @ gram) * h_u).sum(1)  # sum_i x^_i^2
    cross = (h_u * sparse_rows_matmul(x0, item_h)).sum(1)  # sum_i x_0i x^_i
    energy = ((squares - 2.0 * cross + (x0 * x0).sum(1)) / x0.shape[1]).mean()
    observed = x0 > 0
    with torch.no_grad():
        scores = h_u @ item_h.T if cfg.ar_gsp else None  # AR-GSP's candidates
    row, neg = model.pair_negatives(scores, observed, t)
    del scores
    if len(row) == 0:  # every row's user has every item
        return energy
    diff = (h_u[row] * (item_h[positives[row]] - item_h[neg])).sum(1)
    return energy - cfg.temp * model.bpr_likelihood(diff)
