"""HGCF's fast path, for the released triple batches (``sampling: users``): the graph products
through torch's sparse CSR kernel and the margin loss with a hand-written gradient.

Used by ``pipeline/models/hgcf.py`` (``HGCF.loss`` with triples, and the propagation behind
``scores``) only while the switch of ``pipeline/models/fast`` is on and the model samples the
released user-uniform triples; ``HGCF.propagate`` and the loss in the model file are the readable
computation, and ``tests/test_fast_paths.py`` checks that both agree (float64: to 1e-12; float32:
within a rounding bound). The pair batches of the committed 64-d runs (``sampling: pairs``) keep
the readable path, so those runs reproduce bit for bit. What each trick does:

* **Graph products through torch's CSR kernel** (:class:`CSRProduct`): G @ X and, for the
  backward pass, G^T @ X, with both threads, instead of scipy's single-threaded product. Each
  output row sums its row's nonzeros in the same order on every call and thread count
  (``tests/test_fast_paths.py`` checks repeat and 1- vs 2-thread equality); it rounds differently
  from scipy (the sum's order within a row is the kernel's).
* **The margin loss with its gradient written out** (:class:`TripleMarginLoss`): the forward pass
  is the readable one (gathered rows, geoopt's squared distance, clamp at 50, hinge, sum). The
  backward pass forms each triple's three row gradients from two scalars per triple,
  d(d^2)/dz = 2 arcosh(z) arcosh'(z) with z = -<u, i>_L and dz/du = -J i (J = diag(-1, 1, ..., 1)),
  and adds them into the points' gradient with three ``index_add_`` calls. Autograd's version of
  the same backward pass allocates and zero-fills a batch x D tensor for every ``narrow`` of
  geoopt's Minkowski product, the slice of users and items and every intermediate, which was half
  of a 512-d step.
"""

from __future__ import annotations

import torch

from pipeline.models.lorentz import SQDIST_CLAMP, arcosh, expmap0, logmap0, projx

# geoopt's arcosh: sqrt(clamp_min(z^2 - 1, ARCOSH_FLOOR)) (pipeline.models.lorentz.arcosh)
ARCOSH_FLOOR = 1e-15


class CSRProduct(torch.autograd.Function):
    """``a @ x`` for a fixed torch sparse CSR matrix ``a``, its gradient ``a_t @ grad`` with the
    transpose ``a_t`` stored as CSR too."""

    @staticmethod
    def forward(ctx, a: torch.Tensor, a_t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        ctx.a_t = a_t
        return a @ x

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return None, None, ctx.a_t @ grad.contiguous()


def propagate(ego: torch.Tensor, a: torch.Tensor, a_t: torch.Tensor, n_layers: int) -> torch.Tensor:
    """``HGCF.propagate`` on the stacked points (users then items), the products through
    :class:`CSRProduct`: expmap0(sum_{l=1..L} G^l logmap0(proj(ego)))."""
    layer = logmap0(projx(ego))
    total = None
    for _ in range(n_layers):
        layer = CSRProduct.apply(a, a_t, layer)
        total = layer if total is None else total + layer
    return expmap0(total)


def _sqdist_slope(z: torch.Tensor) -> torch.Tensor:
    """d arcosh(z)^2 / dz as autograd forms it through geoopt's arcosh (in float64, where its
    clamp of z^2 - 1 at 1e-15 passes no gradient)."""
    z = z.double()
    gap = z.pow(2) - 1.0
    r = torch.sqrt(torch.clamp_min(gap, ARCOSH_FLOOR))
    d_arcosh = (1.0 + torch.where(gap >= ARCOSH_FLOOR, z / r, torch.zeros_like(z))) / (z + r)
    return 2.0 * arcosh(z) * d_arcosh


def _flip(x: torch.Tensor) -> torch.Tensor:
    """-J x in place (J = diag(-1, 1, ..., 1)): dz/du for z = -<u, x>_L."""
    x.neg_()
    x[:, 0].neg_()
    return x


def _z(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """z = -<x, y>_L row by row, summed as geoopt's ``_inner`` sums it (the time term, then the
    rest; -(-a + b) and a - b are the same float), so arcosh(z)^2 is geoopt's ``dist2`` bit for bit."""
    xy = x * y
    return xy[:, 0] - xy[:, 1:].sum(dim=1)


class TripleMarginLoss(torch.autograd.Function):
    """sum_k max(0, min(d^2(u_k, i_k), 50) - min(d^2(u_k, j_k), 50) + margin) over the triples
    (users[k], positives[k], negatives[k]) of ``points`` (rows: users, then items at ``offset``)."""

    @staticmethod
    def forward(ctx, points: torch.Tensor, users: torch.Tensor, positives: torch.Tensor,
                negatives: torch.Tensor, offset: int, margin: float) -> torch.Tensor:
        pos, neg = positives + offset, negatives + offset
        u, i, j = points.index_select(0, users), points.index_select(0, pos), points.index_select(0, neg)
        z_pos, z_neg = _z(u, i), _z(u, j)
        d_pos, d_neg = arcosh(z_pos) ** 2, arcosh(z_neg) ** 2
        hinge = d_pos.clamp(max=SQDIST_CLAMP) - d_neg.clamp(max=SQDIST_CLAMP) + margin
        ctx.save_for_backward(u, i, j, users, pos, neg, z_pos, z_neg, d_pos, d_neg, hinge)
        ctx.rows = points.shape
        return torch.relu(hinge).sum()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        u, i, j, users, pos, neg, z_pos, z_neg, d_pos, d_neg, hinge = ctx.saved_tensors
        active = (hinge > 0).to(u.dtype) * grad
        # the clamp at 50 passes the gradient where d^2 <= 50 (torch's clamp)
        g_pos = active * (d_pos <= SQDIST_CLAMP).to(u.dtype)
        g_neg = -active * (d_neg <= SQDIST_CLAMP).to(u.dtype)
        g_pos = (g_pos.double() * _sqdist_slope(z_pos)).to(u.dtype).unsqueeze(1)
        g_neg = (g_neg.double() * _sqdist_slope(z_neg)).to(u.dtype).unsqueeze(1)
        out = torch.zeros(ctx.rows, dtype=u.dtype, device=u.device)
        out.index_add_(0, users, _flip(i.mul(g_pos).addcmul_(j, g_neg)))
        u = _flip(u.clone())
        out.index_add_(0, pos, u.mul(g_pos))
        out.index_add_(0, neg, u.mul_(g_neg))
        return out, None, None, None, None, None


def triple_loss(points: torch.Tensor, users: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor,
                n_users: int, margin: float) -> torch.Tensor:
    """HGCF's margin loss of the triples on the stacked final points (:class:`TripleMarginLoss`)."""
    return TripleMarginLoss.apply(points, users, positives, negatives, n_users, margin)
