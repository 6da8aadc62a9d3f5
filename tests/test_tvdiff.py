"""TV-Diff: the normalised item view, AR-GSP negatives (exact support checks), its temperature
schedule, the three free-energy forms, folded vs reference inference, deterministic evaluation
(dropout off) and full ranking on planted data."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from pipeline.config import EvaluationConfig, TrainingConfig, model_config
from pipeline.data.dataset import InteractionData, dense_rows, load_interactions
from pipeline.models import MODELS
from pipeline.models.tvdiff import (
    TVDiff,
    TVDiffConfig,
    ar_gsp_log_weights,
    ar_gsp_temperature,
    candidate_mask,
    draw_negatives,
    normalized_interactions,
    uniform_log_weights,
)
from pipeline.training.trainer import train_run
from planted import write_planted

N_USERS, N_ITEMS, GROUPS = 60, 40, 3
SPLIT = "tiny_clean"
TRAINING = TrainingConfig(device="cpu", threads=1, eval_every=5, patience=20, select_metric="recall@20", checkpoint_every=5)
EVALUATION = EvaluationConfig(topk=(10, 20), batch_size=25)
HYPER = dict(
    lr=0.01, weight_decay=0.0, batch_size=16, epochs=20, dims=[32], emb_size=8, dropout=0.5, steps=5,
    noise_scale=0.01, noise_min=0.001, noise_max=0.01, loss_type="bce", temp=5.0, ar_gsp=False, gamma=0.3, ar_lambda=3.0,
)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> InteractionData:
    return load_interactions(write_planted(tmp_path_factory.mktemp("tiny_clean"), N_USERS, N_ITEMS, GROUPS))


def config(**overrides) -> TVDiffConfig:
    cfg = TVDiffConfig(**{**HYPER, **overrides})
    assert cfg.problems() == []
    return cfg


def make(data: InteractionData, seed: int = 0, **overrides) -> TVDiff:
    torch.manual_seed(seed)
    return TVDiff(config(**overrides), data.n_users, data.n_items, data=data)


def random_recall(data: InteractionData, k: int) -> float:
    """Expected test recall@k of a random ranking (train and valid items masked)."""
    candidates = data.n_items - np.diff((data.train + data.valid).tocsr().indptr)
    return float(np.mean(np.minimum(1.0, k / candidates)))


# --------------------------------------------------------------------------------------------
# registry, config, item view


def test_registered_and_config_checks():
    assert MODELS["tvdiff"] is TVDiff and TVDiff.display_name == "TV-Diff"
    params = {"models": {"tvdiff": {"defaults": HYPER}}}
    assert model_config(params, "tvdiff", SPLIT) == TVDiffConfig(**HYPER)
    bad = TVDiffConfig(**{**HYPER, "loss_type": "mse", "gamma": 0.0, "dims": [], "temp": -1.0, "steps": 0})
    assert {key for key, _ in bad.problems()} == {"loss_type", "gamma", "dims", "temp", "steps"}
    with pytest.raises(ValueError, match="needs the training graph"):
        TVDiff(config(), 3, 3)


def test_normalized_interactions_by_hand():
    r = np.array([[1, 1, 0], [0, 1, 0], [0, 0, 0]], dtype=np.float32)  # user 2 and item 2: no edge
    # degrees: users [2, 1, 0], items [1, 2, 0]; R~_ui = 1 / sqrt(d_u d_i)
    expected = np.array([[1 / math.sqrt(2 * 1), 1 / math.sqrt(2 * 2), 0], [0, 1 / math.sqrt(1 * 2), 0], [0, 0, 0]])
    np.testing.assert_allclose(normalized_interactions(sp.csr_matrix(r)).toarray(), expected, rtol=1e-6)


def test_item_tower_uses_the_sparse_graph(data):
    model = make(data)
    den = model.denoiser
    graph = torch.from_numpy(normalized_interactions(data.train).toarray())
    expected = torch.tanh(graph.T @ den.user_weights[0])
    torch.testing.assert_close(den.item_tower(), expected, rtol=1e-5, atol=1e-6)
    # the gradient reaches W_user through R~ (backward = R~ @ grad)
    den.item_tower().sum().backward()
    g = den.user_weights[0].grad.clone()
    w = den.user_weights[0].detach().clone().requires_grad_(True)
    torch.tanh(graph.T @ w).sum().backward()
    torch.testing.assert_close(g, w.grad, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------------------------
# AR-GSP


def test_temperature_schedule_values():
    t = torch.tensor([0, 2, 5, 9])
    tau = ar_gsp_temperature(t, steps=10, ar_lambda=3.0)
    expected = [math.exp(-3.0), math.exp(-3.0 * 0.8), math.exp(-1.5), math.exp(-0.3)]
    np.testing.assert_allclose(tau.numpy(), expected, rtol=1e-6)
    assert (tau[1:] > tau[:-1]).all()  # sharpest at t = 0, towards 1 as t approaches T
    assert float(ar_gsp_temperature(torch.tensor([10]), 10, 3.0)) == pytest.approx(1.0)
    assert ar_gsp_temperature(t, 10, 0.0).tolist() == [1.0] * 4  # lambda 0: no schedule


def small_example():
    """3 users x 10 items: scores, observed items, and the hand-computed allowed sets for gamma 0.5."""
    scores = torch.tensor(
        [
            [9.0, 8.0, 7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0, 0.0],  # top-5 = 0..4; 0 and 3 observed
            [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0],  # top-5 = 5..9; all observed
            [5.0, 0.0, 5.5, 0.1, 6.0, 0.2, 6.5, 0.3, 7.0, 0.4],  # top-5 = 0, 2, 4, 6, 8; 4 and 8 observed
        ]
    )
    observed = torch.zeros(3, 10, dtype=torch.bool)
    observed[0, [0, 3, 9]] = True
    observed[1, [5, 6, 7, 8, 9]] = True
    observed[2, [4, 8, 1, 3]] = True
    allowed = [{1, 2, 4}, set(), {0, 2, 6}]
    return scores, observed, allowed


def test_candidates_are_the_top_gamma_fraction():
    scores, _, _ = small_example()
    mask = candidate_mask(scores, 0.5)
    assert [set(np.flatnonzero(m).tolist()) for m in mask.numpy()] == [{0, 1, 2, 3, 4}, {5, 6, 7, 8, 9}, {0, 2, 4, 6, 8}]
    assert candidate_mask(scores, 0.01).sum(1).tolist() == [1, 1, 1]  # at least one candidate


@pytest.mark.parametrize("replacement", [False, True], ids=["without-replacement (bce)", "one-per-pair (bpr)"])
def test_ar_gsp_never_draws_observed_items_and_only_candidates(replacement):
    scores, observed, allowed = small_example()
    counts = torch.tensor([2, 3, 5])
    t = torch.tensor([0, 3, 4])
    log_w = ar_gsp_log_weights(scores, observed, t, steps=5, gamma=0.5, ar_lambda=3.0)
    # exactly the unobserved candidates get a finite log-weight
    assert [set(np.flatnonzero(np.isfinite(r)).tolist()) for r in log_w.numpy()] == allowed
    seen = [set(), set(), set()]
    torch.manual_seed(0)
    for _ in range(300):
        log_w = ar_gsp_log_weights(scores, observed, t, steps=5, gamma=0.5, ar_lambda=3.0)
        row, item = draw_negatives(log_w, counts, replacement)
        assert row.tolist() == sorted(row.tolist())  # grouped by row, in order
        per_row = {r: item[row == r].tolist() for r in range(3)}
        for r, drawn in per_row.items():
            assert set(drawn) <= allowed[r], (r, drawn)  # never observed, always a candidate
            seen[r] |= set(drawn)
        if replacement:
            assert [len(per_row[r]) for r in range(3)] == [2, 0, 5]  # counts[r] per row with an allowed item
        else:
            assert [len(per_row[r]) for r in range(3)] == [2, 0, 3]  # min(count, #allowed)
            assert all(len(set(d)) == len(d) for d in per_row.values())  # no repeats
            assert sorted(per_row[2]) == [0, 2, 6]  # more wanted than allowed: all of them
    assert seen == allowed  # every allowed candidate does get drawn


def test_uniform_negatives_are_the_unobserved_items():
    _, observed, _ = small_example()
    counts = observed.sum(1)  # |P(u)| = [3, 5, 4]; unobserved: 7, 5, 6
    torch.manual_seed(1)
    freq = np.zeros((3, 10))
    for _ in range(400):
        row, item = draw_negatives(uniform_log_weights(observed), counts, replacement=False)
        assert not observed[row, item].any()
        assert torch.bincount(row, minlength=3).tolist() == [3, 5, 4]
        np.add.at(freq, (row.numpy(), item.numpy()), 1)
    unobserved = ~observed.numpy()
    assert (freq[~unobserved] == 0).all()
    # uniform without replacement: each unobserved item is drawn with probability |P(u)| / #unobserved
    expected = (counts.numpy() / unobserved.sum(1))[:, None] * 400
    assert np.abs(freq - expected)[unobserved].max() < 0.2 * 400


def test_model_draws_respect_the_batch(data):
    """Through the model: AR-GSP log-weights from the batch's own predictions exclude its train items."""
    model = make(data, ar_gsp=True, gamma=0.5)
    rows = dense_rows(data.train, np.arange(20))
    with torch.no_grad():
        out = model.denoiser(rows, torch.zeros(20, dtype=torch.long))
    log_w = model.negative_log_weights(out, rows > 0, torch.full((20,), 2))
    finite = torch.isfinite(log_w)
    assert not (finite & (rows > 0)).any()
    assert (finite <= candidate_mask(out, 0.5)).all()
    assert (finite.sum(1) <= int(0.5 * N_ITEMS)).all()


# --------------------------------------------------------------------------------------------
# loss


@pytest.mark.parametrize("loss_type", ["bce", "bpr", "nll"])
@pytest.mark.parametrize("ar_gsp", [False, True], ids=["uniform", "ar-gsp"])
def test_each_loss_form_is_finite_and_falls(data, loss_type, ar_gsp):
    model = make(data, loss_type=loss_type, ar_gsp=ar_gsp, dropout=0.0)
    optimizer = model.optimizer()
    assert isinstance(optimizer, torch.optim.Adam)
    rows = dense_rows(data.train, np.arange(N_USERS))
    model.train()
    losses = []
    for _ in range(40):
        optimizer.zero_grad()
        loss = model.loss(rows, np.arange(N_USERS))
        assert loss.dim() == 0 and torch.isfinite(loss)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.1 * abs(np.mean(losses[:5])), losses


def test_nll_loss_by_hand(data):
    """With noise_scale 0 (x_t = x_0) and temp 2, the loss is the documented formula."""
    model = make(data, noise_scale=0.0, loss_type="nll", temp=2.0, dropout=0.0)
    rows = dense_rows(data.train, np.arange(8))
    with torch.no_grad():
        torch.manual_seed(5)
        t = torch.randint(0, 5, (8,))
        out = model.denoiser(rows, t)
        mse = ((rows - out) ** 2).mean(1)
        lik = torch.nn.functional.logsigmoid(out)[rows > 0]
        per_user = torch.zeros(8).index_add_(0, (rows > 0).nonzero()[:, 0], lik)
        expected = (mse - 2.0 * per_user / N_ITEMS).mean()
        torch.manual_seed(5)
        assert model.loss(rows).item() == pytest.approx(expected.item(), rel=1e-5)


# --------------------------------------------------------------------------------------------
# inference


@pytest.mark.parametrize(
    "overrides",
    [dict(), dict(dims=[16, 24]), dict(noise_scale=0.0), dict(steps=1), dict(steps=12, noise_scale=0.1)],
    ids=["one-layer", "two-layers", "noise-scale-0", "one-step", "t12"],
)
def test_folded_scores_equal_reference_and_eval_is_deterministic(data, overrides):
    model = make(data, **overrides)
    optimizer = model.optimizer()
    rows = dense_rows(data.train, np.arange(N_USERS))
    for _ in range(5):  # weights that are not just the initialisation
        optimizer.zero_grad()
        model.loss(rows).backward()
        optimizer.step()
    model.eval()
    folded = model.scores(rows)
    reference = model.scores_reference(rows)
    assert folded.shape == (N_USERS, N_ITEMS)
    assert reference.std() > 1e-3
    assert (folded - reference).abs().max().item() < 1e-4 * max(1.0, reference.abs().max().item())
    # dropout is off in eval mode: the same scores every time, whatever the RNG does
    torch.manual_seed(123)
    assert torch.equal(model.scores(rows), folded)
    assert torch.equal(model.scores_reference(rows), reference)
    # ... and on in train mode (the released inference keeps it on)
    model.train()
    if model.config.dropout > 0:
        assert not torch.equal(model.scores_reference(rows), reference)


def test_train_run_beats_random(data, tmp_path):
    torch.manual_seed(1)
    model = TVDiff(config(epochs=30, ar_gsp=True), N_USERS, N_ITEMS, data=data)
    identity = {"model": "tvdiff", "split": SPLIT, "seed": 1, "config": dataclasses.asdict(model.config)}
    metrics = train_run(model, data, TRAINING, EVALUATION, tmp_path / "run", identity, 1)
    for k in (10, 20):
        chance = random_recall(data, k)
        assert metrics["test"][f"recall@{k}"] > chance + 0.2, (k, metrics["test"], chance)
    # the same seed gives the same run (CPU-deterministic)
    torch.manual_seed(1)
    again = TVDiff(config(epochs=30, ar_gsp=True), N_USERS, N_ITEMS, data=data)
    assert train_run(again, data, TRAINING, EVALUATION, tmp_path / "run2", identity, 1) == metrics
    assert (Path(tmp_path / "run" / "history.csv").read_bytes() == Path(tmp_path / "run2" / "history.csv").read_bytes())
