"""benchmarks/products.py: the product counter behind both benchmarks' floors counts each kind of
product exactly (2 m n k dense, 2 nnz n sparse) and only inside its block."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

from pipeline.models.fast.linear import linear
from pipeline.models.layers import SparseOperator, to_torch_csr

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from products import Products, dense_rate  # noqa: E402


def graph() -> sp.csr_matrix:
    m = sp.random(7, 5, density=0.4, format="csr", random_state=np.random.default_rng(0), dtype=np.float32)
    m.sort_indices()
    return m


def test_dense_products_count_two_m_n_k_also_through_onednn_and_backward():
    a, b = torch.randn(3, 4), torch.randn(4, 6, requires_grad=True)
    counter = Products()
    with counter.counting():
        (a @ b).sum().backward()  # forward 3x4x6, backward: b's gradient a^T g (4x3x6)
    assert counter.flops == 2 * 3 * 4 * 6 * 2
    with counter.counting():  # the next block replaces the count
        linear(torch.randn(5, 4), torch.randn(6, 4), torch.randn(6))  # oneDNN where torch has it
    assert counter.flops == 2 * 5 * 4 * 6


def test_sparse_products_count_two_nnz_n_through_scipy_and_torch_and_are_recorded():
    m = graph()
    operator, csr = SparseOperator(m), to_torch_csr(m)
    x = torch.randn(5, 3)
    counter = Products()
    with counter.counting():
        operator @ x          # scipy on the CPU
        csr @ x               # torch's CSR kernel
    assert counter.flops == 2 * (2 * m.nnz * 3)
    assert sorted(entry[2] for entry in counter.sparse.values()) == [1, 1]  # two matrices, one call each
    seconds, flops = counter.sparse_floor()
    assert flops == 2 * (2 * m.nnz * 3) and seconds > 0 and counter.sparse == {}


def test_counting_restores_the_sparse_operator_and_nothing_counts_outside_a_block():
    m = graph()
    operator, x = SparseOperator(m), torch.randn(5, 2)
    plain = SparseOperator._product
    counter = Products()
    with counter.counting():
        pass
    assert SparseOperator._product is plain and counter.flops == 0
    assert torch.equal(operator @ x, torch.from_numpy(m @ x.numpy()))
    assert counter.sparse == {} and dense_rate(64, repeats=1) > 0
