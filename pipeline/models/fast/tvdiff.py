"""TV-Diff's inference, folded (the speed switch's path for ``pipeline.models.tvdiff.TVDiff.scores``).

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
