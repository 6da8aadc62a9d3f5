"""The graph product of the fast paths: a fixed sparse matrix times a dense one through torch's
CSR kernel, on every thread torch has, with its gradient through the stored transpose.

Used by ``pipeline/models/fast/hgcf.py`` (HGCF's row-normalised graph G and G^T) and
``pipeline/models/fast/lightgcn.py`` (LightGCN's symmetric A~, passed as its own transpose). Each
output row sums its row's nonzeros in one order on every call and thread count
(``tests/test_fast_paths.py`` checks repeat and 1- vs 2-thread equality); it rounds differently
from scipy's single-threaded product in ``pipeline.models.layers.SparseOperator``.
"""

from __future__ import annotations

import torch


class CSRProduct(torch.autograd.Function):
    """``a @ x`` for a fixed torch sparse CSR matrix ``a``, its gradient ``a_t @ grad`` with the
    transpose ``a_t`` stored as CSR too (``a`` itself for a symmetric matrix)."""

    @staticmethod
    def forward(ctx, a: torch.Tensor, a_t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        ctx.a_t = a_t
        return a @ x

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return None, None, ctx.a_t @ grad.contiguous()
