"""The autoencoder baselines' first layer on their sparse input rows, through torch's CSR kernel.

Used by ``pipeline/models/cdae.py`` (the encoder), ``pipeline/models/multidae.py`` and
``pipeline/models/multivae.py`` (the first layer of the stack, on the L2-normalised row) and
``pipeline/models/ldiffrec.py`` (each cluster's encoder, on its items' entries; LT-DiffRec's
time-weighted rows are sparse too) while the switch of ``pipeline/models/fast`` is on, for the
train rows they are fed in training and scoring (MultiDAE++ trains on DiffRec-noised dense rows:
its training keeps the readable product, its scoring on the clean rows takes this one).
``tests/test_fast_paths.py`` checks that both paths compute the same function (float64: to
1e-12) and agree in float32 within a rounding bound.

A user's train row is sparse (an ML-1M user has 2.6 % of the items), so the first layer's W x is
a sum of the few columns of W that the row's kept entries select, and W's gradient is nonzero on
those columns only. The readable path multiplies the dense (batch x items) rows by
W^T and, backwards, the layer's output gradient by those dense rows: two dense
(batch x items x width) products a step. Here both are CSR products with the batch's kept entries
(``CSRProduct`` of ``pipeline/models/fast/graph.py``; each output row sums its row's entries in one
order, on every call and thread count), and the dropout draws one uniform number per nonzero
entry instead of one per entry of the dense rows.

The first layer's weight is stored column-major on the fast path (:func:`store_column_major`,
called by the models at construction while the switch is on): the CSR products read W^T, which
is then contiguous, so neither the forward product nor the weight's gradient (which autograd can
then keep as it comes, in the weight's own layout) makes a transposed copy of the weight: two copies
of an items x width matrix a step. The products read the same numbers in the same order, so the
gradients are the same bits; the optimizer's update is too, except where the weight's size is not
a multiple of the CPU's vector width: torch's fused Adam walks a tensor in memory order, its vector
loop then leaves a few last elements to a scalar loop that can round differently, and which
elements those are depends on the layout (ML-1M noisy L-DiffRec's first encoder, 292 x 1,695:
one element of 494,940 differed after an epoch, and the run's metrics moved by up to 3e-5
relative; MultiDAE's and MultiVAE's 600 x 3,706 and 600 x 3,494 weights leave no such tail).
The state dict has the same keys, shapes and values, and checkpoints are written row-major
(``pipeline/training/checkpoint.py``), so the files are those of a row-major weight.

Differences from the readable path: the same function, rounded differently (the products' sums
run in another order), and another random stream for the dropout (a draw per nonzero entry): a
run on one path is not the other's run bit for bit. The normalised entries are the readable
``F.normalize``'s bit for bit (the same norm of the dense row, the same division).
"""

from __future__ import annotations

import torch
from torch import nn

from pipeline.models.fast.graph import CSRProduct, coalesced_csr, csr

NORMALIZE_EPS = 1e-12  # torch.nn.functional.normalize's default eps


def store_column_major(layer: nn.Linear) -> None:
    """Store ``layer.weight`` (out x in) column-major, its transpose contiguous: the operand of the
    CSR products of :func:`entries_layer` (see the module docstring). A new parameter with the same
    values; call it before an optimizer holds the old one."""
    weight = layer.weight
    if not weight.t().is_contiguous():
        layer.weight = nn.Parameter(weight.detach().t().contiguous().t(), requires_grad=weight.requires_grad)


Entries = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # (row, column, value) of a matrix's nonzeros


def nonzero_entries(rows: torch.Tensor) -> Entries:
    """(row, column, value) of the nonzero entries of ``rows``, row-major."""
    r, c = torch.nonzero(rows, as_tuple=True)
    return r, c, rows[r, c]


def kept_entries(rows: torch.Tensor, drop: float, normalize: bool, entries: Entries | None = None) -> Entries:
    """(row, column, value) of the nonzero entries of ``rows`` after ``F.normalize(rows, dim=1)``
    (if ``normalize``) and inverted dropout with probability ``drop`` (one ``torch.rand`` draw per
    nonzero entry, survivors scaled by 1 / (1 - drop); ``drop`` 0: every entry, unscaled),
    row-major. ``entries``: the rows' :func:`nonzero_entries`, if the caller has them already."""
    r, c, v = nonzero_entries(rows) if entries is None else entries
    if normalize:
        v = v / rows.norm(2, dim=1).clamp_min(NORMALIZE_EPS)[r]
    if drop > 0.0:
        keep = torch.rand(v.shape, dtype=rows.dtype) >= drop
        r, c, v = r[keep], c[keep], v[keep].div_(1.0 - drop)
    return r, c, v


def row_major_csr(r: torch.Tensor, c: torch.Tensor, v: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """The (rows x columns) CSR matrix of the entries (r, c, v), given in row-major order."""
    crow = torch.zeros(shape[0] + 1, dtype=torch.long)
    torch.cumsum(torch.bincount(r, minlength=shape[0]), 0, out=crow[1:])
    return csr(crow, c, v, shape)


def transposed_csr(r: torch.Tensor, c: torch.Tensor, v: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """The transpose of the (rows x columns) matrix of the entries (r, c, v) as CSR."""
    n_rows, n_cols = shape
    return coalesced_csr(torch.sparse_coo_tensor(torch.stack([c, r]), v, (n_cols, n_rows), check_invariants=False))


def entries_layer(r: torch.Tensor, c: torch.Tensor, v: torch.Tensor, shape: tuple[int, int], layer: nn.Linear) -> torch.Tensor:
    """``layer(x)`` for the (rows x columns) matrix x of the row-major entries (r, c, v), as a CSR
    product; no gradient to x (the transpose for the weight's gradient is built only when one is
    needed)."""
    weight = layer.weight
    v = v.to(weight.dtype)
    a = row_major_csr(r, c, v, shape)
    if torch.is_grad_enabled() and weight.requires_grad:
        out = CSRProduct.apply(a, transposed_csr(r, c, v, shape), weight.t())
    else:
        out = a @ weight.t()
    return out + layer.bias if layer.bias is not None else out


def first_layer(rows: torch.Tensor, layer: nn.Linear, drop: float, normalize: bool,
                entries: Entries | None = None) -> torch.Tensor:
    """``layer(dropout(F.normalize(rows) if normalize else rows, drop))`` for (batch x items)
    sparse ``rows``, the product over the kept entries only; no gradient to ``rows``.
    ``entries``: the rows' :func:`nonzero_entries`, if the caller has them already."""
    r, c, v = kept_entries(rows, drop, normalize, entries)
    return entries_layer(r, c, v, tuple(rows.shape), layer)


class SparseTargetLogisticLoss(torch.autograd.Function):
    """The sum over every entry of ``F.binary_cross_entropy_with_logits(logits, y)`` for a target y
    given by its nonzero entries (r, c, v): with BCE(x, y) = softplus(x) - y x, the sum is
    sum softplus(x) - sum_k v_k x[r_k, c_k], and its gradient sigmoid(x) - y is one dense pass
    and a correction at the target's nonzeros. torch's loss forms (1 - y), (1 - y) x and
    log_sigmoid(x) over the dense target and, backwards, sigmoid(x) - y and its product with the
    incoming gradient: passes over the batch x items logits that this one does not make, and it
    never reads the dense target. The gradient is torch's bit for bit (sigmoid(x) where y is 0,
    sigmoid(x) - y at the nonzeros, times the incoming gradient: the same operations on the same
    floats); the loss's value rounds otherwise (softplus(x) - y x against (1 - y) x -
    log_sigmoid(x), one sum over the batch instead of per row)."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, r: torch.Tensor, c: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(logits, r, c, v)
        v = v.to(logits.dtype)
        return torch.nn.functional.softplus(logits).sum() - torch.dot(logits[r, c], v)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        logits, r, c, v = ctx.saved_tensors
        out = torch.sigmoid(logits)
        out.index_put_((r, c), v.to(logits.dtype).neg(), accumulate=True)
        return out.mul_(grad), None, None, None


def logistic_loss_sum(logits: torch.Tensor, entries: Entries) -> torch.Tensor:
    """sum over every entry of BCE-with-logits(logits, y), y the (batch x items) target given by its
    :func:`nonzero_entries` (:class:`SparseTargetLogisticLoss`)."""
    return SparseTargetLogisticLoss.apply(logits, *entries)

