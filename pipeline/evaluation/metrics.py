"""Vectorised full-ranking metrics, exactly as DiffRec's released evaluator computes them.

Protocol (per user u, list L_K = the K highest-scored items after masking):

* masking: validation ranks every item except u's train items; test ranks every item except
  u's train and validation items (masked items get score -inf);
* Recall@K = |L_K ∩ G_u| / |G_u|;  Precision@K = |L_K ∩ G_u| / K;
* NDCG@K = DCG / IDCG with binary gain, DCG = Σ_{j<K, L_K[j] ∈ G_u} 1 / log2(j + 2) and
  IDCG = Σ_{j < min(|G_u|, K)} 1 / log2(j + 2);
* MRR@K = 1 / (j + 1) for the first hit at 0-based position j, 0 without a hit;
* every mean is over the users evaluated on the split: those whose ground truth G_u is not empty
  (:func:`evaluated_users`). DiffRec's released evaluator divides by all users, counting an
  empty G_u as 0: the same number on its splits, where every user has validation and test items.
  TV-Diff's framework averages over its test users: on its splits, where some users have no test
  item, dividing by all users would shrink every mean (``docs/evaluation.md``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from pipeline.evaluation.topk import topk_sorted

METRICS = ("recall", "ndcg", "precision", "mrr")


def rank_topk_(scores: torch.Tensor, exclude: tuple[np.ndarray, np.ndarray], k: int) -> torch.Tensor:
    """Indices of the top-k items per row after setting the excluded (row, item) entries to
    -inf, which is done in place in ``scores``: ``torch.topk``'s (``topk_sorted``, the same
    lists, faster)."""
    rows, items = exclude
    scores[torch.from_numpy(rows), torch.from_numpy(items)] = float("-inf")
    return topk_sorted(scores, min(k, scores.shape[1]))[1]


def rank_topk_nested_(
    scores: torch.Tensor, inner: tuple[np.ndarray, np.ndarray], outer: tuple[np.ndarray, np.ndarray], k: int,
    share: float = 0.95,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``rank_topk_(scores, inner, k)`` and then ``rank_topk_(scores, outer, k)`` for an ``outer``
    exclusion that contains ``inner`` (validation masks train items, test masks train and
    validation items), the same indices from one wider top-k where that is exact.

    One ``torch.topk`` of width w = k + 1 + q over the inner-masked rows, q the number of items
    ``outer`` adds in the row at the ``share`` quantile of the chunk, gives the inner ranking
    (its first k) and the outer ranking (its first k items that ``outer`` does not add: at least
    k + 1 of the w remain, so the k-th is above every item outside the w). That needs the top w
    values of a row to be distinct (no tie, no NaN, at most one -inf): then both rankings are
    unique, and equal ``torch.topk``'s. Other rows, and rows where ``outer`` adds more than q
    items, are ranked by the two ``torch.topk`` calls themselves, as is every row when w exceeds
    the number of items. ``scores`` ends masked with ``outer`` in place, as after the two calls.
    Every top-k here is ``topk_sorted`` (``torch.topk``'s values and indices, faster).
    """
    n_rows, n_items = scores.shape
    k = min(k, n_items)
    inner_rows, inner_items = torch.from_numpy(inner[0]), torch.from_numpy(inner[1])
    outer_rows, outer_items = torch.from_numpy(outer[0]), torch.from_numpy(outer[1])
    scores[inner_rows, inner_items] = float("-inf")
    added = torch.zeros(n_rows, n_items, dtype=torch.bool)
    added[outer_rows, outer_items] = True
    added[inner_rows, inner_items] = False
    n_added = torch.bincount(outer_rows[added[outer_rows, outer_items]], minlength=n_rows)
    q = int(torch.quantile(n_added.double(), share, interpolation="higher")) if n_rows else 0
    width = k + 1 + q
    if width > n_items:
        top_inner = topk_sorted(scores, k)[1]
        return top_inner, rank_topk_(scores, outer, k)
    values, ranked = topk_sorted(scores, width)
    top_inner = ranked[:, :k].clone()
    kept_first = torch.argsort(added.gather(1, ranked).to(torch.int8), dim=1, stable=True)[:, :k]
    top_outer = ranked.gather(1, kept_first)
    exact = (n_added <= q) & ~(values[:, 1:] == values[:, :-1]).any(1) & ~torch.isnan(values[:, 0])
    others = (~exact).nonzero().squeeze(1)
    if len(others):
        top_inner[others] = topk_sorted(scores[others], k)[1]
    scores[outer_rows, outer_items] = float("-inf")
    if len(others):
        top_outer[others] = topk_sorted(scores[others], k)[1]
    return top_inner, top_outer


def per_user_metrics(topk_items: torch.Tensor, truth: torch.Tensor, ks: tuple[int, ...]) -> dict[str, np.ndarray]:
    """Per-user metric values, keys like ``recall@20``; ``truth`` is a dense bool (B, I)."""
    hits = truth.gather(1, topk_items).to(torch.float64)  # (B, kmax)
    n_truth = truth.view(torch.uint8).sum(1, dtype=torch.int32).to(torch.float64)  # 4x count_nonzero's speed
    has_truth = n_truth > 0
    kmax = hits.shape[1]
    discount = 1.0 / torch.log2(torch.arange(kmax, dtype=torch.float64) + 2.0)
    ideal = torch.cumsum(discount, 0)
    first_hit = torch.where(hits.any(1), hits.argmax(1), torch.full_like(n_truth, -1, dtype=torch.long))
    out: dict[str, np.ndarray] = {}
    for k in ks:
        kk = min(k, kmax)
        n_hit = hits[:, :kk].sum(1)
        safe_truth = torch.clamp(n_truth, min=1.0)
        out[f"recall@{k}"] = torch.where(has_truth, n_hit / safe_truth, 0.0)
        out[f"precision@{k}"] = torch.where(has_truth, n_hit / k, 0.0)
        dcg = (hits[:, :kk] * discount[:kk]).sum(1)
        idcg_pos = (torch.clamp(torch.minimum(n_truth, torch.tensor(float(kk))), min=1.0) - 1).long()
        out[f"ndcg@{k}"] = torch.where(has_truth, dcg / ideal[idcg_pos], 0.0)
        in_k = (first_hit >= 0) & (first_hit < kk)
        out[f"mrr@{k}"] = torch.where(in_k & has_truth, 1.0 / (first_hit.to(torch.float64) + 1.0), 0.0)
    return {name: v.numpy() for name, v in out.items()}


def evaluated_users(truth: sp.csr_matrix) -> np.ndarray:
    """The users a split's metrics are averaged over: the rows of ``truth`` (its ground-truth
    matrix) with at least one item, ascending."""
    return np.flatnonzero(np.diff(truth.indptr) > 0)


@dataclass
class EvalResult:
    """Means over the evaluated users per split, and the per-user values (for significance tests)."""

    means: dict[str, dict[str, float]]  # split -> metric -> mean over evaluated_users(truth)
    per_user: dict[str, dict[str, np.ndarray]]  # split -> metric -> (n_users,), 0 where the truth is empty


def mean_metrics(per_user: dict[str, np.ndarray], users: np.ndarray) -> dict[str, float]:
    """Average over ``users`` (:func:`evaluated_users`) of each metric's per-user values."""
    n = max(len(users), 1)
    return {name: float(np.sum(values[users], dtype=np.float64) / n) for name, values in sorted(per_user.items())}
