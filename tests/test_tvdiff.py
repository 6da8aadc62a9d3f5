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
from pipeline.evaluation.evaluator import Evaluator
from pipeline.models import MODELS, fast
from pipeline.models.tvdiff import (
    TVDiff,
    uniform_negative_per_row,
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
    folded = model.scores(rows)  # the speed switch is on by default: the folded chain
    with fast.switched(False):
        reference = model.scores(rows)  # the released step-by-step loop
    assert folded.shape == (N_USERS, N_ITEMS)
    assert reference.std() > 1e-3
    assert (folded - reference).abs().max().item() < 1e-4 * max(1.0, reference.abs().max().item())
    # dropout is off in eval mode: the same scores every time, whatever the RNG does
    torch.manual_seed(123)
    assert torch.equal(model.scores(rows), folded)
    with fast.switched(False):
        assert torch.equal(model.scores(rows), reference)
    # ... and on in train mode (the released inference keeps it on; the loop runs whatever the switch)
    model.train()
    if model.config.dropout > 0:
        assert not torch.equal(model.scores(rows), reference)


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


# --------------------------------------------------------------------------------------------
# batches: the released (user, positive) pair batches of the bpr form


def pair_set(matrix: sp.csr_matrix) -> list[tuple[int, int]]:
    coo = matrix.tocoo()
    return sorted(zip(coo.row.tolist(), coo.col.tolist()))


def test_batching_setting_is_checked():
    assert TVDiffConfig().batching == "pairs" and TVDiffConfig().loss_type == "bpr"  # the released default
    assert [k for k, _ in TVDiffConfig(batching="items").problems()] == ["batching"]


@pytest.mark.parametrize("batch_size", [16, 7, 1000])
def test_pair_batches_visit_every_pair_once(data, batch_size):
    model = make(data, loss_type="bpr", batching="pairs", batch_size=batch_size)
    assert model.pair_batches
    n_pairs = data.train.nnz
    torch.manual_seed(3)
    batches = list(model.batches(data.train))
    sizes = [len(users) for _, users, _ in batches]
    assert sizes == [batch_size] * (n_pairs // batch_size) + ([n_pairs % batch_size] if n_pairs % batch_size else [])
    seen = []
    for rows, users, positives in batches:
        assert rows.shape == (len(users), N_ITEMS) and positives.dtype == torch.long
        assert torch.equal(rows, dense_rows(data.train, users))  # each row is its user's full train row
        assert (rows[torch.arange(len(users)), positives] > 0).all()  # ... and holds the pair's positive
        seen += zip(users.tolist(), positives.tolist())
    assert sorted(seen) == pair_set(data.train)  # every (user, positive) pair exactly once
    # shuffled: another epoch gives another order over the same pairs
    again = [p for _, users, positives in model.batches(data.train) for p in zip(users.tolist(), positives.tolist())]
    assert again != seen and sorted(again) == sorted(seen)


@pytest.mark.parametrize("overrides", [dict(loss_type="bpr", batching="users"), dict(loss_type="bce"), dict(loss_type="nll")],
                         ids=["bpr-users", "bce", "nll"])
def test_user_forms_iterate_over_users(data, overrides):
    """bce and nll always iterate over users (as released), bpr with batching users too."""
    model = make(data, batch_size=16, **overrides)
    assert not model.pair_batches
    batches = list(model.batches(data.train))
    assert [len(b) for b in batches] == [2] * len(batches)  # (rows, users): no positives
    assert sorted(np.concatenate([users for _, users in batches]).tolist()) == list(range(N_USERS))


class Recorder:
    """Records what the denoiser is given: its timesteps and dropped-out inputs."""

    def __init__(self, model: TVDiff):
        self.t, self.dropped = [], []
        forward, drop = model.denoiser.forward, model.denoiser._drop

        def recording_forward(x_t, t, item_h=None):
            self.t.append(t.clone())
            return forward(x_t, t, item_h)

        def recording_drop(x):
            out = drop(x)
            self.dropped.append(out.detach().clone())
            return out

        model.denoiser.forward, model.denoiser._drop = recording_forward, recording_drop


def test_pair_rows_draw_their_own_timestep_noise_and_dropout(data):
    """20 pair rows of one user (identical x_0): timesteps, noisy rows and dropout masks differ."""
    model = make(data, loss_type="bpr", steps=5, noise_scale=0.5, noise_min=0.01, noise_max=0.1, dropout=0.5)
    model.train()
    user = 0
    positives = torch.from_numpy(data.train[user].indices.astype(np.int64))
    users = np.full(20, user)
    rows = dense_rows(data.train, users)
    record = Recorder(model)
    torch.manual_seed(0)
    with fast.switched(False):  # the readable loss calls the recorded denoiser (the fast one: tests/test_fast_paths.py)
        loss = model.loss(rows, users, positives.repeat(4)[:20])
    assert torch.isfinite(loss)
    (t,), (dropped,) = record.t, record.dropped
    assert len(t.unique()) > 1  # per-row timesteps
    assert len({tuple(r.tolist()) for r in (dropped != 0)}) > 1  # per-row dropout masks
    # the noisy rows (before dropout) differ even between rows with the same timestep
    same_t = (t == t[0]).nonzero().squeeze(1)
    assert len(same_t) > 1
    torch.manual_seed(0)
    tt = torch.randint(0, 5, (20,))
    x_t = model.diffusion.q_sample(rows, tt, torch.randn_like(rows))
    assert torch.equal(tt, t)
    assert not torch.equal(x_t[same_t[0]], x_t[same_t[1]])


def test_pair_loss_by_hand(data):
    """The released bpr free energy of pair rows: mean over rows of MSE - temp log(1e-5 + sigma(pos - neg)),
    one uniform negative per row among the user's unobserved items."""
    model = make(data, loss_type="bpr", temp=2.0, noise_scale=0.05, noise_min=0.001, noise_max=0.01, dropout=0.0)
    torch.manual_seed(2)
    rows, users, positives = next(iter(model.batches(data.train)))
    n = len(users)
    torch.manual_seed(7)
    loss = model.loss(rows, users, positives)
    with torch.no_grad():
        torch.manual_seed(7)
        t = torch.randint(0, 5, (n,))
        x_t = model.diffusion.q_sample(rows, t, torch.randn_like(rows))
        out = model.denoiser(x_t, t)
        observed = rows > 0
        neg = torch.randint(0, N_ITEMS, (n,))  # one uniform draw per row, redrawn while observed
        while observed[torch.arange(n), neg].any():
            again = observed[torch.arange(n), neg].nonzero().squeeze(1)
            neg[again] = torch.randint(0, N_ITEMS, (len(again),))
        mse = ((rows - out) ** 2).mean(1)
        diff = out[torch.arange(n), positives] - out[torch.arange(n), neg]
        expected = (mse - 2.0 * torch.log(1e-5 + torch.sigmoid(diff))).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_one_uniform_negative_per_row():
    """Never an observed item, uniform over the unobserved ones, rows without any get none."""
    torch.manual_seed(0)
    observed = torch.rand(6, 10) < 0.5
    observed[2] = True  # a row with every item observed
    observed[3] = False
    observed[4, 1:] = True  # one unobserved item
    counts = torch.zeros(6, 10)
    for _ in range(2000):
        row, item = uniform_negative_per_row(observed)
        assert row.tolist() == [0, 1, 3, 4, 5]
        assert not observed[row, item].any()
        counts[row, item] += 1
    assert counts[4, 0] == 2000
    unobserved = ~observed
    expected = 2000 / unobserved.sum(1, keepdim=True).clamp(min=1)
    assert ((counts - expected).abs()[unobserved] < 0.25 * expected.expand_as(counts)[unobserved]).all()


def test_pair_loss_with_ar_gsp(data, monkeypatch):
    """AR-GSP on pair rows: one negative per row, drawn among the row's own candidates (top gamma
    of its predicted scores, never observed); the loss is finite and falls."""
    import pipeline.models.tvdiff as tvdiff

    drawn = []
    real = tvdiff.draw_negatives

    def recording(log_weights, counts, replacement):
        row, item = real(log_weights, counts, replacement)
        drawn.append((log_weights, counts, row, item))
        return row, item

    monkeypatch.setattr(tvdiff, "draw_negatives", recording)
    model = make(data, loss_type="bpr", ar_gsp=True, gamma=0.5, batch_size=128, dropout=0.0)
    optimizer = model.optimizer()
    torch.manual_seed(0)
    losses = []
    for _ in range(4):
        for rows, users, positives in model.batches(data.train):
            optimizer.zero_grad()
            loss = model.loss(rows, users, positives)
            assert torch.isfinite(loss)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            log_w, counts, row, item = drawn[-1]
            assert counts.tolist() == [1] * len(users) and row.tolist() == list(range(len(users)))
            assert torch.isfinite(log_w[row, item]).all()  # a candidate, not observed
            assert not (rows[row, item] > 0).any()
    assert np.mean(losses[-3:]) < np.mean(losses[:3])


def test_pair_batches_through_the_trainer_and_resume(data, tmp_path):
    """The trainer takes one step per pair batch (loss falls, beats random) and a run killed after
    an epoch's checkpoint and resumed ends with the same outputs as an uninterrupted one."""
    training = dataclasses.replace(TRAINING, eval_every=2, checkpoint_every=2, patience=8)

    def run(run_dir, stop_after_epoch=None):
        torch.manual_seed(1)
        model = TVDiff(config(loss_type="bpr", batching="pairs", batch_size=64, epochs=8), N_USERS, N_ITEMS, data=data)
        steps = []
        loss = model.loss
        model.loss = lambda *args: steps.append(len(args[0])) or loss(*args)
        identity = {"model": "tvdiff", "split": SPLIT, "seed": 1, "config": dataclasses.asdict(model.config)}
        metrics = train_run(model, data, training, EVALUATION, run_dir, identity, 1, stop_after_epoch=stop_after_epoch)
        return metrics, steps

    metrics, steps = run(tmp_path / "whole")
    per_epoch = -(-data.train.nnz // 64)
    assert len(steps) == 8 * per_epoch and sum(steps) == 8 * data.train.nnz  # one step per 64 pair-rows
    assert metrics["test"]["recall@20"] > random_recall(data, 20) + 0.2
    assert run(tmp_path / "killed", stop_after_epoch=4)[0] == {}
    resumed, steps = run(tmp_path / "killed")
    assert len(steps) == 4 * per_epoch  # epochs 5-8 only
    assert resumed == metrics
    for name in ("metrics.json", "history.csv", "per_user.parquet", "model.pt"):
        assert (tmp_path / "killed" / name).read_bytes() == (tmp_path / "whole" / name).read_bytes(), name


def test_released_inference_keeps_dropout_on_and_is_seeded(data):
    # benchmarks/tvdiff_released_inference.py: ours (eval mode) against the released inference
    from benchmarks.tvdiff_released_inference import inference_metrics

    model = make(data, seed=3)
    optimizer, rows = model.optimizer(), dense_rows(data.train, np.arange(N_USERS))
    for _ in range(5):  # a few steps away from the initial weights
        optimizer.zero_grad()
        model.loss(rows).backward()
        optimizer.step()
    ours, released = inference_metrics(model, data, EVALUATION, draws=2)
    model.eval()
    with torch.no_grad():
        scores = model.scores(dense_rows(data.train, np.arange(N_USERS)))
    expected = Evaluator(data, EVALUATION.topk, EVALUATION.batch_size).evaluate(lambda u: scores[u], ("test",)).means["test"]
    assert ours == expected and not model.training
    assert released[0] != released[1] != ours  # a fresh dropout draw per evaluation
    assert inference_metrics(model, data, EVALUATION, draws=1)[1] == released[:1]  # seeded
