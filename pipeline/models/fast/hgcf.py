"""HGCF's fast path, for pair batches and the released triples alike: the graph products
through torch's sparse CSR kernel, the maps to and from the origin's tangent space and the margin
loss with their gradients written out, and Riemannian SGD in place.

Used by ``pipeline/models/hgcf.py`` (``HGCF.loss``, the propagation behind ``scores`` and
``HGCF.optimizer``) while the switch of ``pipeline/models/fast`` is on: a pair batch is the triples
of its pairs (user, positive, drawn negative); ``HGCF.propagate``, the loss in the model file and
geoopt's ``RiemannianSGD`` are the readable computation, and ``tests/test_fast_paths.py`` checks
that both agree (float64: to 1e-12; float32: within a rounding bound). What each trick does:

* **Graph products through torch's CSR kernel** (:class:`CSRProduct` of
  ``pipeline/models/fast/graph.py``): G @ X and, for the backward pass, G^T @ X, with both
  threads, instead of scipy's single-threaded product. Each
  output row sums its row's nonzeros in the same order on every call and thread count
  (``tests/test_fast_paths.py`` checks repeat and 1- vs 2-thread equality); it rounds differently
  from scipy (the sum's order within a row is the kernel's).
* **The maps in closed form** (:class:`LogMap0Proj`, :class:`ExpMap0`). With r = |x_s| (the
  spatial coordinates' norm) and curvature -1, geoopt's logmap0(projx(x)) is (0, asinh(r)/r x_s)
  and the model's expmap0(u) (time coordinate ignored, projected back) is (cosh r, sinh(r)/r u_s).
  Each map is one row norm and one scaled copy; its backward pass one row dot product and one
  scaled sum: d(s(r) x_s) = s dx_s + s'(r)/r (x_s . dx_s) x_s. Autograd through geoopt's
  TorchScript functions makes about ten passes over the points each way (the Minkowski products'
  ``narrow``/``cat``, float64 arcosh). The per-row scalars are computed in float64; like geoopt,
  the norm is floored at 1e-4 (a point that close to the origin keeps the formulas' small-r form).
* **The margin loss with its gradient written out** (:class:`TripleMarginLoss`): the forward pass
  is the readable one (gathered rows, geoopt's squared distance, clamp at 50, hinge, sum), the
  rows gathered a chunk of triples at a time. The backward pass forms each triple's two scalars,
  d(d^2)/dz = 2 arcosh(z) arcosh'(z) for z = -<u, i>_L and -<u, j>_L (dz/du = -J i,
  J = diag(-1, 1, ..., 1)); a user's gradient is then the sum of its triples' item points weighted
  by them, an item's the sum of its triples' user points: two sparse products. Autograd's version
  of the same backward pass allocates and zero-fills a batch x D tensor for every ``narrow`` of
  geoopt's Minkowski product, the slice of users and items and every intermediate.
* **Riemannian SGD in place** (:class:`RiemannianSGD`): geoopt's algorithm and state (weight
  decay, Riemannian gradient, momentum, exponential-map step, momentum transported to the new
  point) with every row's Minkowski products as one ``vecdot`` and every update an in-place
  ``addcmul_``, instead of geoopt's chain of out-of-place TorchScript functions (which also forms
  both logarithmic maps of the transport in full).
"""

from __future__ import annotations

import torch

from pipeline.models.fast.graph import CSRProduct, coalesced_csr
from pipeline.models.lorentz import SQDIST_CLAMP, arcosh, geoopt

# geoopt's arcosh: sqrt(clamp_min(z^2 - 1, ARCOSH_FLOOR)) (pipeline.models.lorentz.arcosh)
ARCOSH_FLOOR = 1e-15
# geoopt's Minkowski norm of a tangent vector: sqrt(clamp_min(<v, v>_L, NORM2_FLOOR))
NORM2_FLOOR = 1e-8
NORM_FLOOR = NORM2_FLOOR**0.5


def _spatial_norm(x: torch.Tensor) -> torch.Tensor:
    """r = |x_s| per row, in float64, floored at geoopt's norm floor."""
    return torch.linalg.vector_norm(x[:, 1:], dim=1).double().clamp_min(NORM_FLOOR)


def _scaled_spatial(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """(0, scale * x_s) row by row; the caller sets the time coordinate if it is not 0."""
    out = torch.empty_like(x)
    out[:, 0] = 0
    torch.mul(x[:, 1:], scale.to(x.dtype).unsqueeze(1), out=out[:, 1:])
    return out


def _scaled_spatial_grad(x: torch.Tensor, g: torch.Tensor, scale: torch.Tensor, slope: torch.Tensor,
                         extra: torch.Tensor | None = None) -> torch.Tensor:
    """The gradient of x -> (., s(r) x_s): (0, s g_s + (s'(r)/r (g_s . x_s) + extra) x_s), where
    ``slope`` is s'(r)/r and ``extra`` a further per-row multiple of x_s."""
    coef = slope * torch.linalg.vecdot(g[:, 1:], x[:, 1:]).double()
    if extra is not None:
        coef = coef + extra
    out = _scaled_spatial(g, scale)
    out[:, 1:].addcmul_(x[:, 1:], coef.to(x.dtype).unsqueeze(1))
    return out


class LogMap0Proj(torch.autograd.Function):
    """``logmap0(projx(x))``: (0, asinh(r)/r x_s), r = |x_s| (x's time coordinate is not read)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        r = _spatial_norm(x)
        scale = torch.asinh(r) / r
        ctx.save_for_backward(x, r, scale)
        return _scaled_spatial(x, scale)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, r, scale = ctx.saved_tensors
        slope = (torch.rsqrt(1.0 + r * r) - scale) / (r * r)  # s'(r) / r, s = asinh(r) / r
        return _scaled_spatial_grad(x, grad, scale, slope)


class ExpMap0(torch.autograd.Function):
    """The model's ``expmap0(u)`` (u's time coordinate ignored, the point projected back onto the
    hyperboloid): (cosh r, sinh(r)/r u_s), r = |u_s|. The projection sets the time coordinate to
    sqrt(1 + |p_s|^2), so its gradient reaches u_s through p_s: (g_0 / p_0) p_s."""

    @staticmethod
    def forward(ctx, u: torch.Tensor) -> torch.Tensor:
        r = _spatial_norm(u)
        scale = torch.sinh(r) / r
        out = _scaled_spatial(u, scale)
        time = torch.sqrt(1.0 + (scale * r) ** 2)  # sqrt(1 + |p_s|^2) = cosh r
        out[:, 0] = time.to(u.dtype)
        ctx.save_for_backward(u, r, scale, time)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        u, r, scale, time = ctx.saved_tensors
        slope = (torch.cosh(r) - scale) / (r * r)  # t'(r) / r, t = sinh(r) / r
        g0 = grad[:, 0].double() / time  # the time coordinate's gradient, moved onto p_s = t u_s
        # (g_s + g0 t u_s) . u_s = g_s . u_s + g0 t r^2
        extra = g0 * scale * (scale + slope * r * r)
        return _scaled_spatial_grad(u, grad, scale, slope, extra)


def propagate(ego: torch.Tensor, a: torch.Tensor, a_t: torch.Tensor, n_layers: int) -> torch.Tensor:
    """``HGCF.propagate`` on the stacked points (users then items), the products through
    :class:`CSRProduct`, the maps :class:`LogMap0Proj` and :class:`ExpMap0`:
    expmap0(sum_{l=1..L} G^l logmap0(proj(ego)))."""
    layer = LogMap0Proj.apply(ego)
    total = None
    for _ in range(n_layers):
        layer = CSRProduct.apply(a, a_t, layer)
        total = layer if total is None else total + layer
    return ExpMap0.apply(total)


def _sqdist_slope(z: torch.Tensor) -> torch.Tensor:
    """d arcosh(z)^2 / dz as autograd forms it through geoopt's arcosh (in float64, where its
    clamp of z^2 - 1 at 1e-15 passes no gradient)."""
    z = z.double()
    gap = z.pow(2) - 1.0
    r = torch.sqrt(torch.clamp_min(gap, ARCOSH_FLOOR))
    d_arcosh = (1.0 + torch.where(gap >= ARCOSH_FLOOR, z / r, torch.zeros_like(z))) / (z + r)
    return 2.0 * arcosh(z) * d_arcosh


def _z(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """z = -<x, y>_L row by row, summed as geoopt's ``_inner`` sums it (the time term, then the
    rest; -(-a + b) and a - b are the same float), so arcosh(z)^2 is geoopt's ``dist2`` bit for bit."""
    xy = x * y
    return xy[:, 0] - xy[:, 1:].sum(dim=1)


class TripleMarginLoss(torch.autograd.Function):
    """sum_k max(0, min(d^2(u_k, i_k), 50) - min(d^2(u_k, j_k), 50) + margin) over the triples
    (users[k], positives[k], negatives[k]) of ``points`` (rows: users, then items at ``offset``).

    The forward pass gathers the triples' rows ``CHUNK`` triples at a time and keeps none: a
    chunk's three row blocks stay in the core's cache, where the whole batch's (three 20,000 x 512
    float32 blocks at the released size, 41 MB each) would be written out to memory and read back.
    The backward pass needs no rows of the triples: each user's gradient is a weighted sum of item
    points and each item's of user points, the weights the triples' two scalars, so it is two
    sparse products (users x items, two nonzeros per triple) instead of a gather, a product and a
    scatter of batch x D blocks."""

    CHUNK = 512  # triples per gathered chunk: 1 MB row blocks at 512 coordinates

    @staticmethod
    def forward(ctx, points: torch.Tensor, users: torch.Tensor, positives: torch.Tensor,
                negatives: torch.Tensor, offset: int, margin: float) -> torch.Tensor:
        pos, neg = positives + offset, negatives + offset
        z_pos, z_neg = points.new_empty(len(users)), points.new_empty(len(users))
        for k in range(0, len(users), TripleMarginLoss.CHUNK):
            part = slice(k, k + TripleMarginLoss.CHUNK)
            u = points.index_select(0, users[part])
            z_pos[part] = _z(u, points.index_select(0, pos[part]))
            z_neg[part] = _z(u, points.index_select(0, neg[part]))
        d_pos, d_neg = arcosh(z_pos) ** 2, arcosh(z_neg) ** 2
        hinge = d_pos.clamp(max=SQDIST_CLAMP) - d_neg.clamp(max=SQDIST_CLAMP) + margin
        ctx.save_for_backward(points, users, pos, neg, z_pos, z_neg, d_pos, d_neg, hinge)
        ctx.offset = offset
        return torch.relu(hinge).sum()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        points, users, pos, neg, z_pos, z_neg, d_pos, d_neg, hinge = ctx.saved_tensors
        active = (hinge > 0).to(points.dtype) * grad
        # the clamp at 50 passes the gradient where d^2 <= 50 (torch's clamp)
        g_pos = active * (d_pos <= SQDIST_CLAMP).to(points.dtype)
        g_neg = -active * (d_neg <= SQDIST_CLAMP).to(points.dtype)
        # -J x = (x_0, -x_s): the minus sign goes into the per-triple factors, then column 0 flips back
        g_pos = (g_pos.double() * _sqdist_slope(z_pos)).neg_().to(points.dtype).unsqueeze(1)
        g_neg = (g_neg.double() * _sqdist_slope(z_neg)).neg_().to(points.dtype).unsqueeze(1)
        # the points' gradient: -J (W @ items) for the users and -J (W^T @ users) for the items, W the
        # users x items matrix of the triples' factors (a pair drawn twice sums its factors)
        offset = ctx.offset
        n_items = points.shape[0] - offset
        w = torch.sparse_coo_tensor(torch.stack([torch.cat([users, users]), torch.cat([pos, neg]) - offset]),
                                    torch.cat([g_pos, g_neg]).squeeze(1), (offset, n_items), check_invariants=True).coalesce()
        out = torch.empty_like(points)
        out[:offset] = coalesced_csr(w) @ points[offset:]
        out[offset:] = coalesced_csr(w.t()) @ points[:offset]
        out[:, 0].neg_()
        return out, None, None, None, None, None


def triple_loss(points: torch.Tensor, users: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor,
                n_users: int, margin: float) -> torch.Tensor:
    """HGCF's margin loss of the triples on the stacked final points (:class:`TripleMarginLoss`)."""
    return TripleMarginLoss.apply(points, users, positives, negatives, n_users, margin)


# ------------------------------------------------------------------------------ optimiser
def _inner(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """<a, b>_L row by row, as geoopt's ``_inner`` (-a_0 b_0 + a_s . b_s), the spatial sum a ``vecdot``."""
    return torch.linalg.vecdot(a[:, 1:], b[:, 1:]) - a[:, 0] * b[:, 0]


def _tangent_norm(v: torch.Tensor) -> torch.Tensor:
    """geoopt's ``_norm``: sqrt(max(<v, v>_L, 1e-8)) per row, as a column."""
    return torch.sqrt(torch.clamp_min(_inner(v, v), NORM2_FLOOR)).unsqueeze(1)


def expmap_transp_(x: torch.Tensor, step: torch.Tensor, buffer: torch.Tensor) -> None:
    """geoopt's ``Lorentz.retr_transp(x, step, buffer)`` in place: x <- expmap_x(step) (the step
    projected on x's tangent space first, the result back onto the hyperboloid) and buffer <- its
    transport from the old x to the new one y, buffer + (<y, v>_L + <x, y>_L <x, v>_L) /
    (1 - <x, y>_L) (x + y) with v = buffer: the parallel transport along the geodesic of v's part
    tangent at x, its part along x kept as it is, which is the map geoopt forms through both
    logarithmic maps divided by d(x, y)^2 (see :class:`RiemannianSGD`; geoopt's first buffer is
    the Euclidean gradient, not a tangent vector). ``step`` is overwritten."""
    col = lambda t: t.unsqueeze(1)  # noqa: E731  a per-row scalar as a column
    step.addcmul_(x, col(_inner(x, step)))  # proju
    n = _tangent_norm(step)
    y = x * torch.cosh(n)
    y.addcmul_(step, torch.sinh(n) / n)
    y[:, 0] = torch.sqrt(1.0 + torch.linalg.vector_norm(y[:, 1:], dim=1) ** 2)  # projx
    c = _inner(x, y)
    coef = col((_inner(y, buffer) + c * _inner(x, buffer)) / (1.0 - c))
    buffer.addcmul_(x, coef).addcmul_(y, coef)
    x.copy_(y)


class RiemannianSGD(geoopt.optim.RiemannianSGD):
    """geoopt's Riemannian SGD on Lorentz points (momentum, weight decay; no dampening, Nesterov
    or stabilisation), each step in place: the same algorithm, state and state dict.

    One formula differs, not the map: the momentum's parallel transport. geoopt computes it as
    v - <log_x y, v>_L / d^2 (log_x y + log_y x), whose terms cancel to within float rounding of
    the points' size when the step d is short: in float32, a step of 1e-3 on points of time
    coordinate ~2 leaves the transported buffer with errors of the order of the buffer itself
    (``tests/test_fast_paths.py`` measures both against float64). The closed form used here
    (:func:`expmap_transp_`) divides by 1 - <x, y>_L >= 2 instead."""

    def __init__(self, params, lr: float, momentum: float, weight_decay: float):
        if momentum <= 0:
            raise ValueError(f"the fast RiemannianSGD needs momentum > 0 (geoopt's plain step otherwise), got {momentum}")
        super().__init__(params, lr=lr, momentum=momentum, weight_decay=weight_decay)

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            group["step"] = group.get("step", 0) + 1
            for x in group["params"]:
                grad = x.grad
                if grad is None:
                    continue
                state = self.state[x]
                if not state:
                    state["momentum_buffer"] = grad.clone()  # geoopt: the first Euclidean gradient
                buffer = state["momentum_buffer"]
                grad.add_(x, alpha=group["weight_decay"])
                grad[:, 0].neg_()  # egrad2rgrad: J g, then its projection on x's tangent space
                grad.addcmul_(x, _inner(x, grad).unsqueeze(1))
                buffer.mul_(group["momentum"]).add_(grad)
                expmap_transp_(x, buffer * -group["lr"], buffer)
        return loss
