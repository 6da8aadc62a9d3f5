"""``topk_sorted`` returns exactly ``torch.topk(scores, k, dim=1, sorted=True)``: values bit for
bit and indices, on distinct scores (its fast path) and on rows it must hand to ``torch.topk``
(ties at or above the k-th value, NaN, -inf, +-0, fewer than k finite values)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import pipeline.evaluation.topk as topk_module
from pipeline.evaluation.topk import _from_order_bits, _order_bits, topk_sorted


def assert_same_as_torch(scores: torch.Tensor, k: int) -> None:
    values, indices = topk_sorted(scores, k)
    expected_values, expected_indices = torch.topk(scores, k, dim=1, sorted=True)
    assert values.dtype == expected_values.dtype and indices.dtype == torch.long
    assert torch.equal(indices, expected_indices)
    assert torch.equal(values.view(torch.int32), expected_values.view(torch.int32))  # bits, NaN included


@pytest.mark.parametrize("k", [1, 2, 20, 100, 158, 299])
def test_distinct_scores_equal_torch_topk(k):
    scores = torch.randn(257, 300, generator=torch.Generator().manual_seed(k))
    assert_same_as_torch(scores, k)


def test_fast_path_ranks_distinct_rows_without_torch_topk(monkeypatch):
    """All rows distinct: no row reaches ``torch.topk`` (the fast path really ranks them)."""
    scores = torch.randn(64, 500, generator=torch.Generator().manual_seed(0))
    expected = torch.topk(scores, 50, dim=1, sorted=True)

    def refuse(*args, **kwargs):
        raise AssertionError("torch.topk called")

    monkeypatch.setattr(topk_module.torch, "topk", refuse)
    values, indices = topk_sorted(scores, 50)
    assert torch.equal(indices, expected.indices) and torch.equal(values, expected.values)


def test_special_rows_equal_torch_topk():
    g = torch.Generator().manual_seed(1)
    scores = torch.randn(12, 40, generator=g)
    scores[0, 5] = float("nan")  # NaN ranks first in torch.topk
    scores[1] = 1.0  # all tied
    scores[2, :37] = float("-inf")  # fewer than k finite values
    top = scores[3].max()
    scores[3, 10] = scores[3, 11] = top  # tie at the top
    scores[4] = torch.round(scores[4] * 2)  # many ties, at the k-th value too
    scores[5, 7], scores[5, 8] = -0.0, 0.0  # signed zeros compare equal
    scores[6] = 0.0
    scores[6, 3] = -0.0
    scores[7] = float("nan")
    scores[8, 0], scores[8, 1], scores[8, 2] = float("nan"), scores[8].max(), scores[8].max()  # NaN, then a tie
    scores[9, :30] = float("-inf")  # masked items below the top k
    scores[10] = torch.arange(40, dtype=torch.float32)  # distinct, integer-valued
    for k in (1, 3, 5, 10, 39):
        assert_same_as_torch(scores, k)


def test_other_inputs_fall_back_to_torch_topk():
    scores = torch.randn(5, 8, generator=torch.Generator().manual_seed(2))
    assert_same_as_torch(scores, 8)  # k = all items
    assert_same_as_torch(scores.double(), 3)
    assert_same_as_torch(scores.t(), 2)  # not contiguous: copied, then the fast path
    empty = torch.empty(0, 8)
    assert topk_sorted(empty, 3)[1].shape == (0, 3)


def test_order_bits_sort_as_floats_and_round_trip():
    values = np.array([-np.inf, -3.5, -1e-30, -0.0, 0.0, 1e-30, 2.0, np.inf], dtype=np.float32)
    bits = _order_bits(values)
    assert np.all(np.diff(bits.astype(np.int64)) > 0)
    assert np.array_equal(_from_order_bits(bits).view(np.uint32), values.view(np.uint32))
