"""Full-ranking evaluation of a model on the validation and test splits, in user chunks.

Valid and test both take the train row as the model input (the reference protocol), so one
scoring pass over all users serves both; only the masks and the ground truth differ. Their
top-k lists come from one wider top-k call where that gives exactly ``torch.topk``'s lists
(``rank_topk_nested_``). Memory: one chunk of dense scores at a time, never the whole user x
item matrix, and at most ``CHUNK_SCORE_BYTES`` of float32 scores in that chunk: at Amazon-book's
94,949 items a chunk of ``evaluation.batch_size`` (1024) users would be 389 MB a score tensor, and
a model's scoring makes several of them; blocks that large no longer fit in the holes a training
epoch leaves in the heap, so every chunk grew the process anew (docs/scaling.md, "Memory").
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from pipeline.data.dataset import InteractionData, mask_rows, positive_entries
from pipeline.evaluation.metrics import (
    EvalResult, evaluated_users, mean_metrics, per_user_metrics, rank_topk_, rank_topk_nested_,
)

ScoreFn = Callable[[np.ndarray], torch.Tensor]  # user ids -> (B, n_items) scores

# The largest (chunk users x items) float32 score block an evaluation makes: 128 MiB. Every split
# of the experiments stays under it at 1024 users (ML-1M 11.5 MB, lastfm 72 MB, amazon-beauty
# 50 MB), so their chunks are the configured ones; Yelp's 34,395 items give 975 users a chunk,
# Amazon-book's 94,949 give 353.
CHUNK_SCORE_BYTES = 128 << 20
FLOAT32_BYTES = 4


def chunk_users(batch_size: int, n_items: int) -> int:
    """Users per scoring chunk: ``batch_size``, fewer where their scores would pass
    ``CHUNK_SCORE_BYTES``; never below one user."""
    return max(1, min(batch_size, CHUNK_SCORE_BYTES // (FLOAT32_BYTES * n_items)))


class Evaluator:
    def __init__(self, data: InteractionData, topk: tuple[int, ...], batch_size: int):
        self.data = data
        self.topk = tuple(sorted(topk))
        self.batch_size = chunk_users(batch_size, data.n_items)
        # test ranks out train and the valid positives that are not test positives too: a split
        # whose valid part is its test part (TV-Diff's authors' protocol, test-selected) still has
        # something to rank; with disjoint valid and test (every other split) this is train + valid
        overlap = data.valid.multiply(data.test)
        test_exclude = (data.train + data.valid - overlap).tocsr()
        test_exclude.eliminate_zeros()
        self.test_exclude = test_exclude

    @torch.no_grad()
    def evaluate(self, score_fn: ScoreFn, splits: tuple[str, ...] = ("valid", "test")) -> EvalResult:
        n_users = self.data.n_users
        kmax = max(self.topk)
        collected: dict[str, dict[str, list[np.ndarray]]] = {s: {} for s in splits}
        for start in range(0, n_users, self.batch_size):
            users = np.arange(start, min(start + self.batch_size, n_users))
            scores = score_fn(users).to(torch.float32, copy=True)  # masked in place below
            if set(splits) == {"valid", "test"}:  # one top-k call serves both (exactly)
                valid_exclude = positive_entries(self._exclude("valid"), users)
                test_exclude = positive_entries(self._exclude("test"), users)
                top = dict(zip(("valid", "test"), rank_topk_nested_(scores, valid_exclude, test_exclude, kmax)))
            else:  # valid first: its masked items (train) are a subset of test's (train + valid)
                top = {}
                for split in sorted(splits, key=("valid", "test").index):
                    top[split] = rank_topk_(scores, positive_entries(self._exclude(split), users), kmax)
            for split in splits:
                truth_matrix = self.data.ground_truth(split)
                values = per_user_metrics(top[split], mask_rows(truth_matrix, users), self.topk)
                for name, v in values.items():
                    collected[split].setdefault(name, []).append(v)
        per_user = {s: {m: np.concatenate(v) for m, v in d.items()} for s, d in collected.items()}
        means = {s: mean_metrics(per_user[s], evaluated_users(self.data.ground_truth(s))) for s in splits}
        return EvalResult(means=means, per_user=per_user)

    def _exclude(self, split: str):
        """The items ranked out for ``split``: train for valid; train and valid for test, except
        valid items that are test positives."""
        return self.data.train if split == "valid" else self.test_exclude
