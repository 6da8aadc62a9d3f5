"""The graph product of the fast paths: a fixed sparse matrix times a dense one through torch's
CSR kernel, on every thread torch has, with its gradient through the stored transpose.

Used by ``pipeline/models/fast/hgcf.py`` (HGCF's row-normalised graph G and G^T),
``pipeline/models/fast/lightgcn.py`` (LightGCN's symmetric A~, passed as its own transpose) and
``pipeline/models/fast/sparse_input.py`` (a batch's kept input entries). Each output row sums its
row's nonzeros in one order on every call and thread count (``tests/test_fast_paths.py`` checks
repeat and 1- vs 2-thread equality); it rounds differently from scipy's single-threaded product in
``pipeline.models.layers.SparseOperator``. The CSR matrices the fast paths build per batch come
from :func:`csr` and :func:`coalesced_csr`.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from typing import Iterator

import torch

CSR_BETA_WARNING = "Sparse CSR tensor support is in beta"  # torch's warning on building a CSR tensor


@contextmanager
def _csr_quietly() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=CSR_BETA_WARNING)
        yield


def csr(crow: torch.Tensor, col: torch.Tensor, values: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """The sparse CSR tensor of the given row pointers, column indices and values (built by the
    caller in order: invariants not checked)."""
    with _csr_quietly():
        return torch.sparse_csr_tensor(crow, col, values, shape, check_invariants=False)


def coalesced_csr(coo: torch.Tensor) -> torch.Tensor:
    """A sparse COO tensor as CSR: its duplicate entries summed (``coalesce``'s order), rows and
    columns sorted."""
    with _csr_quietly():
        return coo.coalesce().to_sparse_csr()


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
