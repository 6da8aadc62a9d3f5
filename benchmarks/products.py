"""The matrix products of a piece of torch code, counted, and the machine's dense product rate: the
yardsticks of ``bench_floor.py`` (ML-1M, every model) and ``bench_scale.py`` (Yelp and Amazon-book
size, DiffRec and L-DiffRec).

* :func:`dense_rate`: a float32 product of two ``size`` x ``size`` matrices with the current
  thread count through each of the two CPU product libraries torch ships, MKL (``torch.mm``) and
  oneDNN (``pipeline/models/fast/linear.py``, which the DiffRec family's products take), best of
  ``repeats`` each; the faster one, in FLOP/s. They differ by CPU: on an AMD core MKL runs its AVX2
  kernels where oneDNN may run AVX-512 ones, so ``torch.mm`` alone can price a floor at half the
  rate the models' own products reach (docs/benchmarks.md);
* :class:`Products`: ``with counter.counting(): ...`` counts every dense product the code runs
  (2 m n k; torch's ``FlopCounterMode``, with oneDNN's fused linear layers of
  ``pipeline/models/fast/linear.py`` mapped too), every torch sparse CSR product (2 nnz n) and
  every product through scipy (``SparseOperator``'s CPU path, 2 nnz n); ``flops`` is their total
  over the last ``counting`` block, and :meth:`Products.sparse_floor` times each sparse product
  seen on its own matrix and width with the faster of scipy's and torch's CSR kernel (best of 3).

The floor of the code is ``flops / rate``: the time it would take if it were nothing but its
products at the dense rate. Run it in a process of its own (``bench_floor`` does), as counting
patches ``SparseOperator`` while the block runs.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator

import torch
from torch.utils.flop_counter import FlopCounterMode

from pipeline.models import layers
from pipeline.models.fast.linear import linear

RATE_SIZE = 2048  # the square float32 product that measures the machine's rate
# Optimizer steps a measurement runs before it times any: the first steps allocate the optimizer's
# state and grow the heap to its working size, page faults that later steps do not pay (measured in
# docs/benchmarks.md, "The heap's top", and docs/scaling.md)
WARMUP_STEPS = 3


def dense_rate(size: int = RATE_SIZE, repeats: int = 5) -> float:
    """FLOP/s of a float32 ``size`` x ``size`` product with torch's current threads: the faster of
    MKL's (``torch.mm``) and oneDNN's (``fast.linear``), best of ``repeats`` each."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    b_t = b.T.contiguous()  # linear takes the weight as (out, in)
    best = float("inf")
    for product in (lambda: torch.mm(a, b), lambda: linear(a, b_t)):
        product()  # first call: the library's set-up
        for _ in range(repeats):
            start = time.perf_counter()
            product()
            best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


class Products:
    """Counts the products of ``counting`` blocks (see the module docstring)."""

    def __init__(self) -> None:
        self.flops = 0
        # sparse products seen: (matrix id, width) -> [matrix, width, calls, flops]
        self.sparse: dict[tuple[int, int], list] = {}

    def _note_sparse(self, matrix, width: int, flops: int) -> None:
        entry = self.sparse.setdefault((id(matrix), width), [matrix, width, 0, 0])
        entry[2] += 1
        entry[3] += flops

    def _flops(self, x: torch.Tensor, y: torch.Tensor) -> int:
        if x.layout == torch.sparse_csr:
            flops = 2 * x._nnz() * y.shape[-1]
            self._note_sparse(x, y.shape[-1], flops)
            return flops
        return 2 * x.shape[0] * x.shape[1] * y.shape[1]

    def _mapping(self) -> dict:
        def mm(x, y, *args, out_val=None, **kwargs):
            return self._flops(x, y)

        def addmm(bias, x, y, *args, out_val=None, **kwargs):
            return self._flops(x, y)

        def onednn_linear(x, weight, *args, out_val=None, **kwargs):
            return 2 * x.numel() * out_val.shape[-1]

        mm._get_raw = addmm._get_raw = onednn_linear._get_raw = True
        mapping = {torch.ops.aten.mm: mm, torch.ops.aten.addmm: addmm}
        if hasattr(torch.ops.mkldnn, "_linear_pointwise"):
            mapping[torch.ops.mkldnn._linear_pointwise] = onednn_linear
        return mapping

    @contextmanager
    def counting(self) -> Iterator["Products"]:
        """Count the block's products into ``flops`` (replacing the last block's count); the
        sparse ones are also recorded for :meth:`sparse_floor`."""
        scipy_flops = [0]
        plain = layers.SparseOperator._product

        def counted(operator, transpose, x):
            width = x.shape[1] if x.dim() == 2 else 1
            flops = 2 * operator.cpu.nnz * width
            scipy_flops[0] += flops
            self._note_sparse(operator.cpu_t if transpose else operator.cpu, width, flops)
            return plain(operator, transpose, x)

        layers.SparseOperator._product = counted
        try:
            with FlopCounterMode(display=False, custom_mapping=self._mapping()) as counter:
                yield self
        finally:
            layers.SparseOperator._product = plain
        self.flops = counter.get_total_flops() + scipy_flops[0]

    def sparse_floor(self) -> tuple[float, float]:
        """(seconds, flops) of the sparse products recorded since the last call, each at the faster
        of scipy's and torch's CSR kernel on this machine (best of 3, on its own matrix and width);
        the record is emptied."""
        import scipy.sparse as sp

        seconds = flops = 0.0
        for matrix, width, calls, counted in self.sparse.values():
            if isinstance(matrix, torch.Tensor):
                crow, col, val = matrix.crow_indices().numpy(), matrix.col_indices().numpy(), matrix.values().numpy()
                scipy_m, torch_m = sp.csr_matrix((val, col, crow), shape=tuple(matrix.shape)), matrix
            else:
                scipy_m, torch_m = matrix, layers.to_torch_csr(matrix)
            x = torch.randn(scipy_m.shape[1], width)
            best = float("inf")
            for product in (lambda: scipy_m @ x.numpy(), lambda: torch_m @ x):
                for _ in range(3):
                    start = time.perf_counter()
                    product()
                    best = min(best, time.perf_counter() - start)
            seconds += calls * best
            flops += counted
        self.sparse.clear()
        return seconds, flops
