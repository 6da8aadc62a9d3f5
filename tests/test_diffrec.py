"""DiffRec: noise schedule, the reverse loop, training loss, importance sampling, and T-DiffRec's
temporal weights (the fast paths against this readable model: tests/test_fast_paths.py)."""

from __future__ import annotations

import json
import math

import numpy as np
import polars as pl
import pytest
import torch
from torch import nn

from pipeline.data.dataset import load_interactions, temporal_weights
from pipeline.stages.prepare import CANONICAL_SCHEMA
from pipeline.models.diffrec import DiffRec, DiffRecConfig
from pipeline.models.diffusion import BETA_FIXED_VALUE, GaussianDiffusion, betas_for


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def config(**overrides) -> DiffRecConfig:
    values = dict(batch_size=16, epochs=10, dims=[8, 16])  # the rest: DiffRecConfig's defaults (ML-1M clean)
    values.update(overrides)
    cfg = DiffRecConfig(**values)
    assert cfg.problems() == []
    return cfg


# --------------------------------------------------------------------------------------------
# (a) noise schedule


def test_linear_var_betas_by_hand():
    # scale 0.1, min 0.01, max 0.04, T = 4:
    # 1 - alpha_bar = linspace(0.001, 0.004, 4) = [0.001, 0.002, 0.003, 0.004]
    # alpha_bar = [0.999, 0.998, 0.997, 0.996]
    # beta_1 = 1 - 0.999 = 0.001; beta_t = 1 - alpha_bar_t / alpha_bar_{t-1}
    #        = 1 - 0.998/0.999 = 0.001/0.999, 0.001/0.998, 0.001/0.997
    expected = [0.001, 0.001 / 0.999, 0.001 / 0.998, 0.001 / 0.997]
    got = betas_for("linear-var", 4, 0.1, 0.01, 0.04, 0.999)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=0)

    d = GaussianDiffusion(steps=4, noise_scale=0.1, noise_min=0.01, noise_max=0.04, beta_fixed=True)
    fixed = [1e-5, 0.001 / 0.999, 0.001 / 0.998, 0.001 / 0.997]  # beta_1 replaced by 1e-5
    assert BETA_FIXED_VALUE == 1e-5
    assert d.betas.dtype == torch.float64
    np.testing.assert_allclose(d.betas.numpy(), fixed, rtol=1e-12, atol=0)
    free = GaussianDiffusion(steps=4, noise_scale=0.1, noise_min=0.01, noise_max=0.04, beta_fixed=False)
    np.testing.assert_allclose(free.betas.numpy(), expected, rtol=1e-12, atol=0)

    # alpha_bar and the posterior coefficients follow from the fixed betas
    acp = np.cumprod([1 - b for b in fixed])
    np.testing.assert_allclose(d.alphas_cumprod.numpy(), acp, rtol=1e-12)
    # t = 1 (0-based): coef1 = beta_1 sqrt(acp_0) / (1 - acp_1); coef2 = (1 - acp_0) sqrt(1 - beta_1) / (1 - acp_1)
    assert float(d.posterior_mean_coef1[1]) == pytest.approx(fixed[1] * math.sqrt(acp[0]) / (1 - acp[1]), rel=1e-10)
    assert float(d.posterior_mean_coef2[1]) == pytest.approx((1 - acp[0]) * math.sqrt(1 - fixed[1]) / (1 - acp[1]), rel=1e-10)
    # t = 0: acp_prev = 1, so the last reverse step returns the predicted x0 (coef1 = 1, coef2 = 0)
    assert float(d.posterior_mean_coef1[0]) == pytest.approx(1.0, abs=1e-9)
    assert float(d.posterior_mean_coef2[0]) == 0.0


def test_linear_var_max_beta_cap_and_linear_schedule():
    # scale 1, min 0.1, max 0.9, T = 2: alpha_bar = [0.9, 0.1] -> beta_2 = 1 - 0.1/0.9 = 8/9, capped at 0.5
    np.testing.assert_allclose(betas_for("linear-var", 2, 1.0, 0.1, 0.9, 0.999), [0.1, 8 / 9], rtol=1e-12)
    np.testing.assert_allclose(betas_for("linear-var", 2, 1.0, 0.1, 0.9, 0.5), [0.1, 0.5], rtol=1e-12)
    # linear: the linspace itself: 0.5 * [0.01, 0.02, 0.03]
    np.testing.assert_allclose(betas_for("linear", 3, 0.5, 0.01, 0.03, 0.999), [0.005, 0.01, 0.015], rtol=1e-12)
    with pytest.raises(ValueError, match="linear-var"):
        betas_for("cosine", 3, 0.5, 0.01, 0.03, 0.999)


# --------------------------------------------------------------------------------------------
# (b) the reverse loop


def test_reference_loop_by_hand_with_identity_denoiser():
    """reverse(): T posterior-mean steps from the unnoised row; a denoiser returning 2x gives a known product."""
    d = GaussianDiffusion(steps=3, noise_scale=0.1, noise_min=0.01, noise_max=0.1)

    class Double(nn.Module):
        def forward(self, x, t):
            return 2 * x

    x = torch.rand(4, 5)
    factor = 1.0
    for t in (2, 1, 0):  # x_{t-1} = coef1_t * 2 x_t + coef2_t * x_t
        factor *= 2 * float(d.posterior_mean_coef1[t]) + float(d.posterior_mean_coef2[t])
    torch.testing.assert_close(d.reverse(Double(), x, 0), factor * x, rtol=1e-6, atol=1e-7)
    zero = GaussianDiffusion(steps=3, noise_scale=0.0, noise_min=0.01, noise_max=0.1)
    torch.testing.assert_close(zero.reverse(Double(), x, 0), 8 * x)  # pure denoiser chain: 2^3


# --------------------------------------------------------------------------------------------
# (c) training loss


def planted_rows(n_users: int, n_items: int, groups: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    block = n_items // groups
    x = torch.zeros(n_users, n_items)
    for u in range(n_users):
        k = u % groups
        x[u, k * block : (k + 1) * block] = (torch.rand(block, generator=g) < 0.7).float()
    return x


@pytest.mark.parametrize("reweight", [True, False])
def test_training_loss_finite_and_decreasing(reweight):
    x = planted_rows(24, 30, 3)
    torch.manual_seed(0)
    model = DiffRec(
        config(dims=[16], emb_size=4, steps=5, noise_scale=0.1, noise_min=0.01, noise_max=0.1, lr=1e-2, dropout=0.0, reweight=reweight),
        24,
        30,
    )
    opt = model.optimizer()
    assert isinstance(opt, torch.optim.AdamW)
    model.train()
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = model.loss(x)
        assert loss.dim() == 0 and torch.isfinite(loss)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])
    # the importance-sampling history is filled (24 users x 30 batches >> 5 steps x 10)
    assert model.diffusion.loss_count.tolist() == [10] * 5


def test_loss_history_is_in_the_state_dict():
    model = DiffRec(config(steps=5), 10, 20)
    keys = set(model.state_dict())
    assert {"diffusion.loss_history", "diffusion.loss_count"} <= keys
    assert "diffusion.betas" not in keys  # derived from the config, not state


# --------------------------------------------------------------------------------------------
# (d) importance sampling


def make_diffusion(steps=3, history=10, uniform_prob=0.001) -> GaussianDiffusion:
    return GaussianDiffusion(
        steps=steps, noise_scale=0.1, noise_min=0.01, noise_max=0.1, history=history, uniform_prob=uniform_prob
    )


def test_record_losses_keeps_newest_in_order():
    d = make_diffusion()
    f64 = torch.float64
    # step 0: 12 losses 1..12 in one batch -> the newest 10: 3..12
    d.record_losses(torch.zeros(12, dtype=torch.long), torch.arange(1, 13, dtype=f64))
    assert d.loss_count.tolist() == [10, 0, 0]
    assert d.loss_history[0].tolist() == [float(v) for v in range(3, 13)]
    # interleaved steps 1 and 2 in one batch: each keeps its own batch order
    t = torch.tensor([1, 2, 1, 2, 1])
    d.record_losses(t, torch.tensor([10.0, 20.0, 11.0, 21.0, 12.0]))
    assert d.loss_count.tolist() == [10, 3, 2]
    assert d.loss_history[1, :3].tolist() == [10.0, 11.0, 12.0]
    assert d.loss_history[2, :2].tolist() == [20.0, 21.0]
    # not full yet: uniform sampling, pt = 1
    torch.manual_seed(0)
    ts, pt = d.sample_timesteps(500, torch.device("cpu"))
    assert pt.tolist() == [1.0] * 500 and set(ts.tolist()) == {0, 1, 2}
    # step 1 gets 9 more (3 + 9 = 12 -> drops 10, 11); step 2 gets 8 more (full at exactly 10)
    d.record_losses(torch.ones(9, dtype=torch.long), torch.arange(100, 109, dtype=f64))
    d.record_losses(torch.full((8,), 2), torch.arange(200, 208, dtype=f64))
    assert d.loss_count.tolist() == [10, 10, 10]
    assert d.loss_history[1].tolist() == [12.0] + [float(v) for v in range(100, 109)]
    assert d.loss_history[2].tolist() == [20.0, 21.0] + [float(v) for v in range(200, 208)]
    # a further loss for step 0 shifts its window by one
    d.record_losses(torch.tensor([0]), torch.tensor([99.0]))
    assert d.loss_history[0].tolist() == [float(v) for v in range(4, 13)] + [99.0]
    assert d.loss_count.tolist() == [10, 10, 10]


def filled_diffusion() -> tuple[GaussianDiffusion, np.ndarray]:
    d = make_diffusion(steps=3, uniform_prob=0.001)
    histories = np.array([np.arange(1, 11), np.full(10, 5.0), np.linspace(0.1, 1.0, 10)], dtype=np.float64)
    for step in range(3):
        d.record_losses(torch.full((10,), step), torch.from_numpy(histories[step]))
    # p_t ∝ sqrt(mean(L^2)) over the last 10 losses, mixed (1 - u) p + u / T
    lt = np.sqrt(np.mean(histories**2, axis=1))
    pt_all = lt / lt.sum() * (1 - 0.001) + 0.001 / 3
    return d, pt_all


def test_importance_sampling_probabilities():
    d, pt_all = filled_diffusion()
    # by hand for step 1: sqrt(mean(5^2)) = 5; step 0: sqrt(385/10); step 2: sqrt(mean(linspace^2))
    assert math.isclose(np.sqrt(np.mean(np.arange(1, 11) ** 2)), math.sqrt(38.5))
    assert pt_all.sum() == pytest.approx(1.0, abs=1e-12)
    torch.manual_seed(3)
    t, pt = d.sample_timesteps(20000, torch.device("cpu"))
    assert pt.dtype == torch.float64
    np.testing.assert_allclose(pt.numpy(), pt_all[t.numpy()] * 3, rtol=1e-12)  # pt = p_t * T
    freq = np.bincount(t.numpy(), minlength=3) / len(t)
    np.testing.assert_allclose(freq, pt_all, atol=0.015)


def test_training_loss_divides_by_pt_and_records_unscaled_losses():
    d, pt_all = filled_diffusion()

    class Zero(nn.Module):  # predicted x0 = 0, so the per-user MSE is mean(x^2), whatever the noise
        def forward(self, x, t):
            return torch.zeros_like(x)

    x = (torch.rand(64, 12, generator=torch.Generator().manual_seed(1)) < 0.4).float()
    mse = x.double().pow(2).mean(1).numpy()
    torch.manual_seed(9)
    t, pt = d.sample_timesteps(64, torch.device("cpu"))  # the same draw training_loss will make
    before = d.loss_history.clone()
    torch.manual_seed(9)
    loss = d.training_loss(Zero(), x, reweight=True)
    acp = d.alphas_cumprod.numpy()
    snr = acp / (1 - acp)
    tn = t.numpy()
    weight = np.where(tn == 0, 1.0, snr[tn - 1] - snr[tn])  # SNR(t-1) - SNR(t), 1 at t = 0
    expected = np.mean(weight * mse / pt.numpy())
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    # the history gets weight * mse (not divided by pt), the newest at the end, in batch order
    for step in range(3):
        new = (weight * mse)[tn == step]
        merged = np.concatenate([before[step].numpy(), new])[-10:]
        np.testing.assert_allclose(d.loss_history[step].numpy(), merged, rtol=1e-6)
    # without reweighting the weight is 1
    torch.manual_seed(9)
    t2, pt2 = d.sample_timesteps(64, torch.device("cpu"))
    torch.manual_seed(9)
    plain = d.training_loss(Zero(), x, reweight=False)
    assert plain.item() == pytest.approx(np.mean(mse / pt2.numpy()), rel=1e-6)


# --------------------------------------------------------------------------------------------
# (e) temporal weights


def write_canonical(folder, rows: list[tuple[int, int, str]], n_users: int, n_items: int) -> None:
    """rows: (user, item, split) in each user's time order."""
    order: dict[int, int] = {}
    records = []
    for user, item, split in rows:
        records.append(dict(user=user, item=item, split=split, order=order.get(user, 0), timestamp=None, rating=None))
        order[user] = order.get(user, 0) + 1
    table = pl.DataFrame(records, schema=CANONICAL_SCHEMA).sort("user", "order")
    folder.mkdir(parents=True, exist_ok=True)
    table.write_parquet(folder / "interactions.parquet")
    (folder / "stats.json").write_text(json.dumps({"n_users": n_users, "n_items": n_items}))


def test_temporal_weights_follow_train_time_order(tmp_path):
    rows = [
        # user 0: train items 3, 0, 4 (in time order), then valid 1, test 2
        (0, 3, "train"), (0, 0, "train"), (0, 4, "train"), (0, 1, "valid"), (0, 2, "test"),
        # user 1: a single train item, then valid
        (1, 2, "train"), (1, 0, "valid"),
        # user 2: no train rows at all
        (2, 1, "test"),
        # user 3: train items 5, 4, 3, 2, 1, 0 (the newest is item 0)
        (3, 5, "train"), (3, 4, "train"), (3, 3, "train"), (3, 2, "train"), (3, 1, "train"), (3, 0, "train"),
    ]  # fmt: skip
    write_canonical(tmp_path, rows, n_users=4, n_items=6)
    data = load_interactions(tmp_path)
    assert (data.n_users, data.n_items) == (4, 6)
    expected_train = np.zeros((4, 6), dtype=np.float32)
    expected_train[0, [3, 0, 4]] = 1
    expected_train[1, 2] = 1
    expected_train[3, :] = 1
    np.testing.assert_array_equal(data.train.toarray(), expected_train)
    np.testing.assert_array_equal(data.valid.toarray()[[0, 1]].nonzero()[1], [1, 0])
    np.testing.assert_array_equal(data.test.toarray().nonzero(), ([0, 2], [2, 1]))
    # train_rank: 1 + position in the user's train time order
    rank = data.train_rank.toarray()
    assert rank[0].tolist() == [2, 0, 0, 1, 3, 0]
    assert rank[1].tolist() == [0, 0, 1, 0, 0, 0]
    assert rank[3].tolist() == [6, 5, 4, 3, 2, 1]

    w = temporal_weights(data.train_rank, 0.1, 1.0)
    assert w.dtype == np.float32
    dense = w.toarray()
    expected = np.zeros((4, 6), dtype=np.float32)
    # user 0: linspace(0.1, 1.0, 3) = [0.1, 0.55, 1.0] for items 3, 0, 4
    expected[0, [3, 0, 4]] = np.array([0.1, 0.55, 1.0], dtype=np.float32)
    # user 1: a single interaction gets w_min (np.linspace(0.1, 1.0, 1) == [0.1])
    expected[1, 2] = np.float32(0.1)
    # user 3: linspace(0.1, 1.0, 6) = 0.1, 0.28, 0.46, 0.64, 0.82, 1.0 for items 5, 4, 3, 2, 1, 0
    expected[3, [5, 4, 3, 2, 1, 0]] = np.array([0.1, 0.28, 0.46, 0.64, 0.82, 1.0], dtype=np.float32)
    np.testing.assert_allclose(dense, expected, rtol=0, atol=1e-7)
    # same sparsity as the binary train matrix; the rank matrix is not modified
    np.testing.assert_array_equal(w.indices, data.train.indices)
    np.testing.assert_array_equal(w.indptr, data.train.indptr)
    assert data.train_rank.toarray()[3].tolist() == [6, 5, 4, 3, 2, 1]
