"""Row-wise top-k of a score matrix: ``torch.topk(scores, k, dim=1, sorted=True)``, the same
values and indices, faster on the CPU (``benchmarks/bench_diffrec.py`` times the evaluation pass
that uses it).

``torch.topk`` selects each row's top k with a scalar ``nth_element`` and sorts them. Here NumPy's
SIMD selection (``np.partition``, x86-simd-sort on AVX-512/AVX2) finds each row's k-th largest
value t. A row where exactly k entries are >= t has those k entries as its top k, and where
their values are distinct their descending order is unique, so it is ``torch.topk``'s. They are
sorted in one SIMD sort of 64-bit keys (the value's bits in an order-preserving form, then the
item index). Every other row (ties at or above the k-th value, NaN, fewer than k finite values)
is ranked by ``torch.topk`` itself, whose order among equal values is its own.
"""

from __future__ import annotations

import numpy as np
import torch

_SIGN = np.uint32(0x80000000)
_LOW = np.uint64(0xFFFFFFFF)


def _order_bits(values: np.ndarray) -> np.ndarray:
    """uint32 whose unsigned order is the float32 ``values``' order (-0.0 just below +0.0)."""
    bits = values.view(np.uint32)
    return np.where(bits >= _SIGN, ~bits, bits | _SIGN)


def _from_order_bits(bits: np.ndarray) -> np.ndarray:
    """The float32 values back from ``_order_bits`` (the same bits)."""
    return np.where(bits >= _SIGN, bits ^ _SIGN, ~bits).view(np.float32)


def topk_sorted(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.topk(scores, k, dim=1, sorted=True)`` as (values, indices), the same tensors (other
    devices and dtypes, and k >= the number of items, go to ``torch.topk`` directly)."""
    n_rows, n_items = scores.shape
    if not (scores.device.type == "cpu" and scores.dtype == torch.float32 and 0 < k < n_items < 2**32 and n_rows > 0):
        return tuple(torch.topk(scores, k, dim=1, sorted=True))
    s = scores.detach().contiguous().numpy()
    kth = np.partition(s, n_items - k, axis=1)[:, n_items - k]
    flat = np.flatnonzero(s >= kth[:, None])  # row-major: each row's entries together
    rows = flat // n_items
    selected = np.bincount(rows, minlength=n_rows) == k  # (NaN is never >= t: not counted)
    if not selected.all():
        keep = selected[rows]
        flat, rows = flat[keep], rows[keep]
    keys = _order_bits(s.reshape(-1)[flat]).astype(np.uint64) << np.uint64(32) | (flat - rows * n_items).astype(np.uint64)
    keys = np.sort(keys.reshape(-1, k), axis=1)[:, ::-1]  # descending value (distinct: index never decides)
    values = _from_order_bits((keys >> np.uint64(32)).astype(np.uint32))
    indices = (keys & _LOW).astype(np.int64)
    distinct = ~(values[:, 1:] == values[:, :-1]).any(1)  # float ==: -0.0 and +0.0 tie
    if selected.all() and distinct.all():
        return torch.from_numpy(values), torch.from_numpy(indices)
    fast = np.flatnonzero(selected)
    top_values = torch.empty(n_rows, k, dtype=scores.dtype)
    top_indices = torch.empty(n_rows, k, dtype=torch.long)
    top_values[fast], top_indices[fast] = torch.from_numpy(values), torch.from_numpy(indices)
    redo = torch.from_numpy(np.union1d(np.flatnonzero(~selected), fast[~distinct]))
    top_values[redo], top_indices[redo] = torch.topk(scores[redo], k, dim=1, sorted=True)
    return top_values, top_indices
