"""LightGCN's fast path: the graph products through torch's CSR kernel and the BPR loss with its
gradient written out as one sparse product.

Used by ``pipeline/models/lightgcn.py`` (``LightGCN.propagate`` and ``LightGCN.loss``) while the
switch of ``pipeline/models/fast`` is on: the loss by LightGCN and by MF (LightGCN with no layers,
``pipeline/models/mf.py``, whose final embeddings are the ego tables), the products by LightGCN.
``tests/test_fast_paths.py`` checks that both paths compute the same function (float64: to 1e-12)
and agree in float32 within a rounding bound. What each trick does:

* **Graph products through torch's CSR kernel** (:class:`CSRProduct` of
  ``pipeline/models/fast/graph.py``): A~ @ X on both threads instead of scipy's single-threaded
  product. A~ = D^-1/2 A D^-1/2 is symmetric, so the backward pass multiplies by A~ again. Each
  output row sums its row's nonzeros in one order on every call and thread count (the test checks
  repeat and 1- vs 2-thread equality); it rounds differently from scipy (the order of a row's sum
  is the kernel's).
* **The BPR loss with its gradient written out** (:class:`BPRLoss`): the forward pass is the
  readable one (the pairs' rows gathered, x = <u, n> - <u, p>, mean softplus). Its gradient is,
  with g = sigmoid(x) / P per pair, sum g (n - p) for a user and -g u (positive) or +g u
  (negative) for an item: the product of the stacked final embeddings with one symmetric sparse
  matrix of the pairs' g's (users x items entries and their mirror), instead of autograd's
  three P x d gathers, their scatters and the zero-filled slices of the stacked table.
* **MF's gradient straight into its tables** (:class:`TableBPRLoss`): without layers the final
  embeddings are the two ego tables, so each pair's terms are added into the rows of the user and
  item tables in pair order (``index_add_``), with no stacked table, no sparse matrix to sort and
  coalesce and no product (another summation order than :class:`BPRLoss`'s).
* **The L2 term from counts** (:func:`bpr_loss`): 1/2 sum over pairs of |e_u|^2 + |e_p|^2 +
  |e_n|^2 is 1/2 (sum_u c_u |e_u|^2 + sum_i c_i |e_i|^2) with c the number of times each row is
  gathered (``bincount``), so its gradient c e is one scaled copy of each table.
"""

from __future__ import annotations

import torch

from pipeline.models.fast.graph import CSRProduct, coalesced_csr


def layer_mean(ego: torch.Tensor, a: torch.Tensor, n_layers: int) -> torch.Tensor:
    """The mean of the layers 0..L, E_{l+1} = A~ E_l, users and items stacked (the readable
    ``LightGCN.propagate``'s sum, in its order, with the products through the CSR kernel)."""
    total, layer = ego, ego
    for _ in range(n_layers):
        layer = CSRProduct.apply(a, a, layer)  # A~ is its own transpose
        total = total + layer
    return total / (n_layers + 1)


class BPRLoss(torch.autograd.Function):
    """mean over pairs of softplus(<f_u, f_n> - <f_u, f_p>) for the stacked final embeddings ``f``
    (users first, then items: an item's row is ``n_users + item``)."""

    @staticmethod
    def forward(ctx, final: torch.Tensor, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        # the rows gathered by the row kernel (index_select), the values final[ids] gives
        u, p, n = final.index_select(0, users), final.index_select(0, pos), final.index_select(0, neg)
        x = (u * n).sum(1) - (u * p).sum(1)
        ctx.save_for_backward(final, users, pos, neg, x)
        return torch.nn.functional.softplus(x).mean()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        final, users, pos, neg, x = ctx.saved_tensors
        g = torch.sigmoid(x) * (grad / len(x))
        # one symmetric matrix: (u, n) = g, (u, p) = -g and their mirrors; rows sum in coalesce's order
        rows = torch.cat([users, users, neg, pos])
        cols = torch.cat([neg, pos, users, users])
        values = torch.cat([g, -g, g, -g])
        n = final.shape[0]
        m = coalesced_csr(torch.sparse_coo_tensor(torch.stack([rows, cols]), values, (n, n), check_invariants=False))
        return m @ final, None, None, None


class TableBPRLoss(torch.autograd.Function):
    """:class:`BPRLoss` where the final embeddings are the ego tables themselves (MF: no layers):
    the rows gathered from the user and the item table, and each table's gradient its rows'
    terms added in pair order (``index_add_``) instead of the stacked table's sparse product."""

    @staticmethod
    def forward(ctx, user_table: torch.Tensor, item_table: torch.Tensor, users: torch.Tensor, pos: torch.Tensor,
                neg: torch.Tensor) -> torch.Tensor:
        u = user_table.index_select(0, users)  # the rows of table[ids], gathered by the row kernel
        d = item_table.index_select(0, neg) - item_table.index_select(0, pos)
        x = (u * d).sum(1)  # <u, n> - <u, p>
        ctx.save_for_backward(u, d, users, pos, neg, x)
        ctx.tables = (user_table.shape, item_table.shape)
        return torch.nn.functional.softplus(x).mean()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        u, d, users, pos, neg, x = ctx.saved_tensors
        g = (torch.sigmoid(x) * (grad / len(x))).unsqueeze(1)
        grad_users = u.new_zeros(ctx.tables[0]).index_add_(0, users, d * g)
        gu = u * g
        grad_items = u.new_zeros(ctx.tables[1]).index_add_(0, neg, gu).index_add_(0, pos, gu, alpha=-1)
        return grad_users, grad_items, None, None, None


def bpr_loss(final: torch.Tensor | None, ego_users: torch.Tensor, ego_items: torch.Tensor, users: torch.Tensor,
             pos: torch.Tensor, neg: torch.Tensor, reg_weight: float) -> torch.Tensor:
    """``LightGCN.loss`` for the sampled pairs (``users``, ``pos``, ``neg``: user and item ids) on
    the stacked final embeddings ``final`` (None: the ego tables, MF) and the ego tables: mean BPR
    + reg_weight * the pairs' mean L2 of their ego rows."""
    n_users, n_items = ego_users.shape[0], ego_items.shape[0]
    if final is None:
        bpr = TableBPRLoss.apply(ego_users, ego_items, users, pos, neg)
    else:
        bpr = BPRLoss.apply(final, users, pos + n_users, neg + n_users)
    user_count = torch.bincount(users, minlength=n_users).to(ego_users.dtype)
    item_count = (torch.bincount(pos, minlength=n_items) + torch.bincount(neg, minlength=n_items)).to(ego_items.dtype)
    reg = 0.5 * ((user_count * ego_users.pow(2).sum(1)).sum() + (item_count * ego_items.pow(2).sum(1)).sum()) / len(users)
    return bpr + reg_weight * reg
