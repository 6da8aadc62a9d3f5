"""Full-ranking metrics: hand-computed examples and a cross-check against a plain-loop evaluator.

Protocol (pipeline/evaluation/metrics.py): valid masks train items, test masks train + valid
items; Recall = hits/|G|, Precision = hits/K, NDCG with binary gain and IDCG over
min(|G|, K) positions, MRR = 1/(first hit rank); means divide by all users (empty G -> 0).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from pipeline.data.dataset import InteractionData, dense_rows, mask_rows
import pipeline.evaluation.evaluator as evaluator_module
from pipeline.evaluation.evaluator import Evaluator, chunk_users
from pipeline.evaluation.metrics import evaluated_users, mean_metrics, per_user_metrics, rank_topk_, rank_topk_nested_


def L(j: int) -> float:
    """Discount of 1-based rank position ``j``: 1 / log2(j + 1)."""
    return 1.0 / math.log2(j + 1)


def csr(rows: list[set[int]], n_items: int) -> sp.csr_matrix:
    users = [u for u, items in enumerate(rows) for _ in items]
    items = [i for its in rows for i in sorted(its)]
    m = sp.csr_matrix(
        (np.ones(len(users), dtype=np.float32), (users, items)), shape=(len(rows), n_items), dtype=np.float32
    )
    m.sort_indices()
    return m


def make_data(train, valid, test, n_items) -> InteractionData:
    n_users = len(train)
    tr = csr(train, n_items)
    return InteractionData(n_users, n_items, tr, csr(valid, n_items), csr(test, n_items), tr.copy())


# --------------------------------------------------------------------------------------------
# 3 users x 6 items, K in {1, 3}; all scores in a row are distinct (no ties)

SCORES = torch.tensor(
    [
        [0.9, 0.1, 0.8, 0.3, 0.7, 0.2],  # u0 order: i0 i2 i4 i3 i5 i1
        [0.2, 0.6, 0.1, 0.5, 0.4, 0.3],  # u1 order: i1 i3 i4 i5 i0 i2
        [0.5, 0.4, 0.3, 0.2, 0.1, 0.0],  # u2 order: i0 i1 i2 i3 i4 i5
    ]
)
TRAIN = [{0}, {1, 3}, {0}]  # u0 and u2: the train item would otherwise rank first
VALID = [{3, 4}, {4}, set()]  # u2: empty validation ground truth (left out of the valid means)
TEST = [{1}, {5, 2}, {1, 3, 4}]
KS = (1, 3)

# ---- valid: mask train --------------------------------------------------------------------
# u0: mask {0} -> top3 [2, 4, 3]; G = {3, 4}: hits at ranks 2, 3
#     @1: 0 hits -> all 0;  @3: R = 2/2, P = 2/3, MRR = 1/2,
#     NDCG = (1/log2(3) + 1/log2(4)) / (1/log2(2) + 1/log2(3))
# u1: mask {1, 3} -> top3 [4, 5, 0]; G = {4}: hit at rank 1
#     @1: R = 1, P = 1, NDCG = 1, MRR = 1;  @3: R = 1, P = 1/3, NDCG = 1/log2(2) / 1/log2(2) = 1, MRR = 1
# u2: G empty -> 0 everywhere
VALID_TOP3 = [[2, 4, 3], [4, 5, 0], [1, 2, 3]]
U0_VALID_NDCG3 = (L(2) + L(3)) / (L(1) + L(2))
VALID_PER_USER = {
    "recall@1": [0, 1, 0],
    "precision@1": [0, 1, 0],
    "ndcg@1": [0, 1, 0],
    "mrr@1": [0, 1, 0],
    "recall@3": [1, 1, 0],
    "precision@3": [2 / 3, 1 / 3, 0],
    "ndcg@3": [U0_VALID_NDCG3, 1, 0],
    "mrr@3": [1 / 2, 1, 0],
}
VALID_MEANS = {  # over u0 and u1: u2 has no validation item
    "recall@1": 1 / 2,
    "precision@1": 1 / 2,
    "ndcg@1": 1 / 2,
    "mrr@1": 1 / 2,
    "recall@3": (1 + 1) / 2,
    "precision@3": (2 / 3 + 1 / 3) / 2,
    "ndcg@3": (U0_VALID_NDCG3 + 1) / 2,
    "mrr@3": (1 / 2 + 1) / 2,
}

# ---- test: mask train + valid -------------------------------------------------------------
# u0: mask {0, 3, 4} -> top3 [2, 5, 1]; G = {1}: hit at rank 3
#     @1: 0;  @3: R = 1, P = 1/3, NDCG = (1/log2(4)) / (1/log2(2)) = 1/2, MRR = 1/3
# u1: mask {1, 3, 4} -> top3 [5, 0, 2]; G = {5, 2}: hits at ranks 1, 3
#     @1: R = 1/2, P = 1, NDCG = 1/1 (IDCG over min(2, 1) = 1 position), MRR = 1
#     @3: R = 1, P = 2/3, NDCG = (1/log2(2) + 1/log2(4)) / (1/log2(2) + 1/log2(3)), MRR = 1
# u2: mask {0} (valid empty) -> top3 [1, 2, 3]; G = {1, 3, 4}: hits at ranks 1, 3
#     @1: R = 1/3, P = 1, NDCG = 1, MRR = 1
#     @3: R = 2/3, P = 2/3, NDCG = (1/log2(2) + 1/log2(4)) / (1/log2(2) + 1/log2(3) + 1/log2(4)), MRR = 1
TEST_TOP3 = [[2, 5, 1], [5, 0, 2], [1, 2, 3]]
U1_TEST_NDCG3 = (L(1) + L(3)) / (L(1) + L(2))
U2_TEST_NDCG3 = (L(1) + L(3)) / (L(1) + L(2) + L(3))
TEST_PER_USER = {
    "recall@1": [0, 1 / 2, 1 / 3],
    "precision@1": [0, 1, 1],
    "ndcg@1": [0, 1, 1],
    "mrr@1": [0, 1, 1],
    "recall@3": [1, 1, 2 / 3],
    "precision@3": [1 / 3, 2 / 3, 2 / 3],
    "ndcg@3": [1 / 2, U1_TEST_NDCG3, U2_TEST_NDCG3],
    "mrr@3": [1 / 3, 1, 1],
}
TEST_MEANS = {
    "recall@1": (0 + 1 / 2 + 1 / 3) / 3,
    "precision@1": (0 + 1 + 1) / 3,
    "ndcg@1": (0 + 1 + 1) / 3,
    "mrr@1": (0 + 1 + 1) / 3,
    "recall@3": (1 + 1 + 2 / 3) / 3,
    "precision@3": (1 / 3 + 2 / 3 + 2 / 3) / 3,
    "ndcg@3": (1 / 2 + U1_TEST_NDCG3 + U2_TEST_NDCG3) / 3,
    "mrr@3": (1 / 3 + 1 + 1) / 3,
}


def dense(rows: list[set[int]], n_items: int = 6) -> torch.Tensor:
    out = torch.zeros(len(rows), n_items, dtype=torch.bool)
    for u, items in enumerate(rows):
        out[u, sorted(items)] = True
    return out


def entries(rows: list[set[int]]) -> tuple[np.ndarray, np.ndarray]:
    pairs = [(u, i) for u, items in enumerate(rows) for i in sorted(items)]
    return np.array([u for u, _ in pairs], dtype=np.int64), np.array([i for _, i in pairs], dtype=np.int64)


def test_rank_topk_masks_items_and_sorts():
    exclude_valid = entries(TRAIN)
    exclude_test = entries([a | b for a, b in zip(TRAIN, VALID)])
    scores = SCORES.clone()
    assert rank_topk_(scores, exclude_valid, 3).tolist() == VALID_TOP3
    assert torch.equal(scores, SCORES.masked_fill(dense(TRAIN), float("-inf")))  # masked in place
    assert rank_topk_(SCORES.clone(), exclude_test, 3).tolist() == TEST_TOP3
    # without masks the highest-scored (train) items come first
    assert rank_topk_(SCORES.clone(), entries([set()] * 3), 1).tolist() == [[0], [1], [0]]
    # k larger than the number of items is capped
    assert rank_topk_(SCORES.clone(), exclude_valid, 50).shape == (3, 6)


def test_rank_topk_nested_by_hand():
    """Valid and test rankings from one call: the hand-computed lists, scores left test-masked."""
    exclude_valid = entries(TRAIN)
    exclude_test = entries([a | b for a, b in zip(TRAIN, VALID)])
    scores = SCORES.clone()
    top_valid, top_test = rank_topk_nested_(scores, exclude_valid, exclude_test, 3)
    assert top_valid.tolist() == VALID_TOP3 and top_test.tolist() == TEST_TOP3
    assert torch.equal(scores, SCORES.masked_fill(dense([a | b for a, b in zip(TRAIN, VALID)]), float("-inf")))


def nested_case(seed: int, n_rows: int = 300, n_items: int = 400):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(n_rows, n_items, generator=g)
    # ties (within the top, at the cut-off and elsewhere), NaN, +-inf, and rows with few items left
    scores[:40] = torch.round(scores[:40] * 4) / 4
    scores[40, ::37], scores[41, :3], scores[42, 5:9] = float("nan"), float("inf"), float("-inf")
    scores[43] = 1.0
    inner = torch.rand(n_rows, n_items, generator=g) < 0.2
    inner[44, :395] = True  # 5 items left: -inf ties in the top-k
    added = (torch.rand(n_rows, n_items, generator=g) < 0.05) & ~inner
    added[45:50] |= torch.rand(5, n_items, generator=g) < 0.5  # above the chunk's 95 % quantile
    outer = inner | added
    as_entries = lambda m: tuple(x.numpy() for x in m.nonzero(as_tuple=True))  # noqa: E731
    return scores, as_entries(inner), as_entries(outer)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("k", [1, 20, 100, 399])
def test_rank_topk_nested_equals_two_topk_calls(seed, k):
    """Bit-identical to masking and ranking twice (torch.topk's own order among ties), scores
    included, on rows with ties, NaN, infinities and many added items, and when k + 1 + q
    exceeds the number of items."""
    scores, inner, outer = nested_case(seed)
    want_scores = scores.clone()
    want_valid = rank_topk_(want_scores, inner, k)
    want_test = rank_topk_(want_scores, outer, k)
    got_valid, got_test = rank_topk_nested_(scores, inner, outer, k)
    assert torch.equal(got_valid, want_valid) and torch.equal(got_test, want_test)
    assert torch.equal(scores.nan_to_num(5.0), want_scores.nan_to_num(5.0))


@pytest.mark.parametrize(
    "top, truth, expected",
    [(VALID_TOP3, VALID, VALID_PER_USER), (TEST_TOP3, TEST, TEST_PER_USER)],
    ids=["valid", "test"],
)
def test_per_user_metrics_by_hand(top, truth, expected):
    values = per_user_metrics(torch.tensor(top), dense(truth), KS)
    assert sorted(values) == sorted(expected)
    for name, want in expected.items():
        assert values[name].dtype == np.float64
        np.testing.assert_allclose(values[name], want, rtol=0, atol=1e-12, err_msg=name)


def test_mean_metrics_over_evaluated_users():
    values = per_user_metrics(torch.tensor(VALID_TOP3), dense(VALID), KS)
    users = evaluated_users(make_data(TRAIN, VALID, TEST, 6).valid)
    assert users.tolist() == [0, 1]  # u2's validation ground truth is empty
    means = mean_metrics(values, users)
    for name, want in VALID_MEANS.items():
        assert means[name] == pytest.approx(want, abs=1e-12), name
    # over all three users (DiffRec's rule) the same sums are 2/3 of these means
    assert mean_metrics(values, np.arange(3))["recall@3"] == pytest.approx(VALID_MEANS["recall@3"] * 2 / 3, abs=1e-12)


@pytest.mark.parametrize("batch_size", [1, 2, 3, 100])
def test_evaluator_by_hand(batch_size):
    data = make_data(TRAIN, VALID, TEST, 6)
    calls = []

    def score_fn(users: np.ndarray) -> torch.Tensor:
        calls.append(users.tolist())
        return SCORES[torch.from_numpy(users)].double()  # the evaluator casts to float32

    result = Evaluator(data, (3, 1), batch_size).evaluate(score_fn)
    # one scoring pass over all users serves both splits, in chunks of batch_size
    assert [u for c in calls for u in c] == [0, 1, 2]
    assert all(len(c) <= batch_size for c in calls)
    assert set(result.means) == {"valid", "test"}
    for split, means, per_user in [
        ("valid", VALID_MEANS, VALID_PER_USER),
        ("test", TEST_MEANS, TEST_PER_USER),
    ]:
        assert sorted(result.means[split]) == sorted(means)
        for name, want in means.items():
            assert result.means[split][name] == pytest.approx(want, abs=1e-12), (split, name)
        for name, want in per_user.items():
            np.testing.assert_allclose(result.per_user[split][name], want, rtol=0, atol=1e-12, err_msg=f"{split} {name}")


def test_chunk_users_caps_the_score_block(monkeypatch):
    """A chunk's float32 scores stay within CHUNK_SCORE_BYTES: Amazon-book's 94,949 items take 353
    users a chunk, ML-1M's 2,810 the configured 1024; never fewer than one user."""
    assert chunk_users(1024, 2_810) == 1024
    assert chunk_users(1024, 94_949) == 353 == (128 << 20) // (4 * 94_949)
    assert chunk_users(1024, 10**9) == 1
    # the evaluator scores in the capped chunks, with the same metrics as the configured ones
    data = make_data(TRAIN, VALID, TEST, 6)
    full = Evaluator(data, (3, 1), 100).evaluate(lambda u: SCORES[torch.from_numpy(u)])
    monkeypatch.setattr(evaluator_module, "CHUNK_SCORE_BYTES", 2 * 4 * 6)  # two users of 6 items
    calls = []

    def score_fn(users: np.ndarray) -> torch.Tensor:
        calls.append(users.tolist())
        return SCORES[torch.from_numpy(users)]

    capped = Evaluator(data, (3, 1), 100).evaluate(score_fn)
    assert calls == [[0, 1], [2]]
    for split in ("valid", "test"):
        assert capped.means[split] == full.means[split]
        for name, values in full.per_user[split].items():
            np.testing.assert_array_equal(capped.per_user[split][name], values)


def test_evaluator_single_split():
    data = make_data(TRAIN, VALID, TEST, 6)
    result = Evaluator(data, (1, 3), 2).evaluate(lambda u: SCORES[torch.from_numpy(u)], splits=("test",))
    assert set(result.means) == {"test"}
    assert result.means["test"]["ndcg@3"] == pytest.approx(TEST_MEANS["ndcg@3"], abs=1e-12)


# --------------------------------------------------------------------------------------------
# randomized cross-check against a straightforward loop (DiffRec's computeTopNAccuracy, unrounded,
# averaged over the users with a ground truth)


def loop_metrics(ranked: list[list[int]], truth: list[set[int]], ks) -> dict[str, float]:
    n = len(ranked)
    n_truth = max(sum(1 for g in truth if g), 1)  # the users with a ground truth
    out = {}
    for k in ks:
        sums = dict(recall=0.0, precision=0.0, ndcg=0.0, mrr=0.0)
        for u in range(n):
            g = truth[u]
            if not g:
                continue
            hit, dcg, idcg, mrr = 0, 0.0, 0.0, 0.0
            idcg_count = len(g)
            for j in range(k):
                if ranked[u][j] in g:
                    dcg += 1.0 / math.log2(j + 2)
                    if mrr == 0.0:
                        mrr = 1.0 / (j + 1)
                    hit += 1
                if idcg_count > 0:
                    idcg += 1.0 / math.log2(j + 2)
                    idcg_count -= 1
            sums["recall"] += hit / len(g)
            sums["precision"] += hit / k
            sums["ndcg"] += dcg / idcg
            sums["mrr"] += mrr
        out.update({f"{m}@{k}": v / n_truth for m, v in sums.items()})
    return out


def python_ranking(scores: np.ndarray, excluded: set[int]) -> list[int]:
    return sorted((i for i in range(len(scores)) if i not in excluded), key=lambda i: -scores[i])


def test_evaluator_matches_loop_reference_random():
    rng = np.random.default_rng(7)
    n_users, n_items, ks = 50, 40, (5, 10, 20)
    scores = rng.permutation(n_users * n_items).reshape(n_users, n_items).astype(np.float32) / 2000.0  # distinct
    train, valid, test = [], [], []
    for u in range(n_users):
        items = rng.permutation(n_items)
        n_tr, n_va, n_te = rng.integers(0, 12), rng.integers(0, 6), rng.integers(0, 6)
        if u % 10 == 3:
            n_va = 0  # some users without validation items
        if u % 10 == 7:
            n_te = 0  # some users without test items
        train.append(set(items[:n_tr].tolist()))
        valid.append(set(items[n_tr : n_tr + n_va].tolist()))
        test.append(set(items[n_tr + n_va : n_tr + n_va + n_te].tolist()))
    data = make_data(train, valid, test, n_items)
    result = Evaluator(data, ks, 16).evaluate(lambda users: torch.from_numpy(scores[users]))

    ranked_valid = [python_ranking(scores[u], train[u]) for u in range(n_users)]
    ranked_test = [python_ranking(scores[u], train[u] | valid[u]) for u in range(n_users)]
    expected = {"valid": loop_metrics(ranked_valid, valid, ks), "test": loop_metrics(ranked_test, test, ks)}
    for split in ("valid", "test"):
        assert sorted(result.means[split]) == sorted(expected[split])
        for name, want in expected[split].items():
            assert result.means[split][name] == pytest.approx(want, abs=1e-12), (split, name)
        assert all(len(v) == n_users for v in result.per_user[split].values())
    # sanity: the example is not degenerate
    assert 0 < expected["test"]["recall@10"] < 1 and 0 < expected["valid"]["ndcg@5"] < 1


def test_mask_rows_equals_dense_rows_positive():
    """The evaluator's masks come from the CSR entries: the same as making the rows dense and
    comparing > 0, with explicit zeros, negative values, duplicates and empty rows."""
    rows = np.array([0, 0, 1, 1, 3, 3, 3])
    cols = np.array([1, 4, 2, 2, 0, 3, 5])
    data = np.array([1.0, 0.0, 0.4, 0.3, -1.0, 2.0, 0.5], dtype=np.float32)  # (1, 2) a duplicate
    matrix = sp.csr_matrix((data, (rows, cols)), shape=(5, 6))
    matrix.data[1] = 0.0  # keep an explicit zero stored
    users = np.array([3, 0, 2, 1, 4])
    got = mask_rows(matrix, users)
    assert got.dtype == torch.bool
    assert torch.equal(got, dense_rows(matrix, users) > 0)
    assert got.sum().item() == 4


def test_a_split_whose_valid_part_is_its_test_part_still_ranks_test():
    """TV-Diff's authors' protocol (valid = test, test-selected): the test ranking masks train and
    only the validation items that are not test positives, so test metrics equal valid metrics."""
    data = make_data(TRAIN, TEST, TEST, 6)
    result = Evaluator(data, KS, batch_size=2).evaluate(lambda users: SCORES[users])
    assert result.means["test"] == result.means["valid"]
    assert result.means["test"]["recall@3"] > 0
