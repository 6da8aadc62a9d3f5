"""HDRM and its stage 1: Lorentz geometry (geoopt maps), the row-normalised graph, the HGCF-style
hyperbolic LightGCN (propagation, points on the manifold, falling loss, the embedding artifact),
and HDRM (vectorised scoring vs the per-user loop, geometric noise, falling loss, full ranking)."""

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
from pipeline.models.lorentz import (
    expmap0,
    load_hyperbolic_embeddings,
    logmap0,
    minkowski_norm2,
    pairwise_sqdist,
    sqdist,
    to_tangent0,
)
from pipeline.models import MODELS
from pipeline.models.layers import row_normalized_adjacency, sample_pairs, triple_batches, user_uniform_triples
from pipeline.models.hdrm import HDRM, HDRMConfig, geometric_noise
from pipeline.models.hgcf import HGCF, HGCFConfig
from pipeline.training.fitting import build_model
from pipeline.training.trainer import train_run
from planted import write_planted, train_and_export

N_USERS, N_ITEMS, GROUPS = 60, 40, 3
SPLIT = "tiny_clean"
TRAINING = TrainingConfig(device="cpu", threads=1, eval_every=5, patience=20, select_metric="recall@20", checkpoint_every=5)
EVALUATION = EvaluationConfig(topk=(10, 20), batch_size=25)
HGCF_HYPER = dict(emb_size=16, n_layers=2, lr=0.05, weight_decay=0.0, momentum=0.9, margin=0.2, init_scale=0.1, batch_size=16, epochs=10)
HDRM_HYPER = dict(
    lr=1e-3, weight_decay=0.0, batch_size=16, epochs=10, dims=[8, 24], emb_size=10, dropout=0.5, act="relu", steps=5,
    noise_scale=0.01, noise_min=0.001, noise_max=0.01, alpha=0.05, margin=0.2, mix=0.05, geometric_noise=False,
)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return write_planted(tmp_path_factory.mktemp("tiny_clean"), N_USERS, N_ITEMS, GROUPS)


@pytest.fixture(scope="module")
def data(data_dir) -> InteractionData:
    return load_interactions(data_dir)


def params_for(**overrides) -> dict:
    """The parts of params.yaml that build_model, training and the embedding stage read."""
    return {
        "models": {"hgcf": {"defaults": {**HGCF_HYPER, **overrides}}, "hdrm": {"defaults": HDRM_HYPER}},
        "embeddings": {"seed": 1},
        "training": dataclasses.asdict(TRAINING),
        "evaluation": {"topk": list(EVALUATION.topk), "batch_size": EVALUATION.batch_size},
    }


@pytest.fixture(scope="module")
def stage1(data_dir, tmp_path_factory) -> tuple[dict, Path]:
    """HGCF trained on the planted data by the train stage, its points exported by the embed stage
    into the run folder: (metrics, that folder)."""
    out = tmp_path_factory.mktemp("hgcf")
    cwd = Path.cwd()
    import os

    os.chdir(out)  # the timing file goes to ./logs/timing
    try:
        metrics = train_and_export(params_for(), SPLIT, "hgcf", str(data_dir), str(out / "run"))
    finally:
        os.chdir(cwd)
    return metrics, out / "run"


def random_recall(data: InteractionData, k: int) -> float:
    """Expected test recall@k of a random ranking (train and valid items masked)."""
    candidates = data.n_items - np.diff((data.train + data.valid).tocsr().indptr)
    return float(np.mean(np.minimum(1.0, k / candidates)))


def random_points(n: int, dim: int, scale: float = 0.7, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return expmap0(torch.randn(n, dim, generator=g, dtype=torch.float64) * scale)


# --------------------------------------------------------------------------------------------
# geometry


def test_expmap_logmap_round_trip():
    g = torch.Generator().manual_seed(0)
    u = torch.randn(50, 9, generator=g, dtype=torch.float64) * torch.linspace(0.01, 3.0, 50, dtype=torch.float64)[:, None]
    x = expmap0(u)
    torch.testing.assert_close(logmap0(x), to_tangent0(u), rtol=1e-9, atol=1e-9)  # the time coordinate is ignored
    assert (logmap0(x)[:, 0] == 0).all()
    torch.testing.assert_close(expmap0(logmap0(x)), x, rtol=1e-9, atol=1e-9)
    # the distance to the origin is the tangent norm
    origin = torch.zeros(1, 9, dtype=torch.float64)
    origin[0, 0] = 1.0
    torch.testing.assert_close(sqdist(origin.expand(50, -1), x), (u[:, 1:] ** 2).sum(1), rtol=1e-9, atol=1e-9)


def test_points_are_on_the_manifold_and_distance_is_symmetric():
    x, y = random_points(30, 6, seed=1), random_points(20, 6, seed=2)
    torch.testing.assert_close(minkowski_norm2(x), torch.full((30,), -1.0, dtype=torch.float64), rtol=0, atol=1e-9)
    assert (x[:, 0] >= 1).all()
    d = pairwise_sqdist(x, y)
    assert d.shape == (30, 20) and (d >= 0).all()
    torch.testing.assert_close(d, pairwise_sqdist(y, x).T, rtol=1e-12, atol=1e-12)
    # the matrix form equals geoopt's paired distance and the closed form arcosh(-<x, y>_L)^2
    for i in range(30):
        torch.testing.assert_close(d[i], sqdist(x[i].expand(20, -1), y), rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(sqdist(x[i].expand(20, -1), y), sqdist(y, x[i].expand(20, -1)), rtol=0, atol=0)
    inner = -x[:, :1] * y[:, 0] + x[:, 1:] @ y[:, 1:].T
    torch.testing.assert_close(d, torch.arccosh(-inner) ** 2, rtol=1e-8, atol=1e-8)
    assert pairwise_sqdist(x, x).diagonal().abs().max() < 1e-6


def test_row_normalized_adjacency_by_hand():
    r = np.array([[1, 1, 0], [0, 1, 0]], dtype=np.float32)  # item 2 has no edge
    a = np.zeros((5, 5))
    a[:2, 2:], a[2:, :2] = r, r.T
    a += np.eye(5)
    expected = a / a.sum(1, keepdims=True)  # D^-1 (A + I): every row sums to 1
    assert expected[0, 3] == pytest.approx(1 / 3) and expected[4, 4] == 1.0
    np.testing.assert_allclose(row_normalized_adjacency(sp.csr_matrix(r)).toarray(), expected, rtol=1e-6)


def test_sample_pairs():
    rows = torch.tensor([[1.0, 0, 1, 0, 0], [0, 0, 0, 0, 0], [1, 1, 1, 1, 0], [1, 1, 1, 1, 1]])
    torch.manual_seed(0)
    for _ in range(50):
        b, pos, neg = sample_pairs(rows)
        # every nonzero once, row-major; the full row 3 has no negative and is dropped
        assert b.tolist() == [0, 0, 2, 2, 2, 2] and pos.tolist() == [0, 2, 0, 1, 2, 3]
        assert (rows[b, neg] == 0).all()
        assert (neg[2:] == 4).all()  # the only free item of row 2


def test_user_uniform_triples(monkeypatch):
    """The released epoch's draw: as many triples as train pairs; a user uniformly among those
    with a train item and a free item, a positive among its train items, a negative among the
    others; the same from the same seed; the direct draw after the rejection rounds exact too."""
    import pipeline.models.layers as layers

    dense = np.zeros((8, 12), dtype=np.float32)
    dense[0, [1, 3, 4]] = 1.0
    dense[1, :] = 1.0  # every item: no negative, never drawn
    dense[3, [0, 2]] = 2.0  # (user 2 has no train item: never drawn)
    dense[4, :11] = 1.0  # one free item, 11
    dense[6:, [5, 7]] = 1.0
    r, c = dense.nonzero()
    # user 5's only entry is an explicitly stored zero: not a train item
    matrix = sp.csr_matrix((np.append(dense[r, c], 0.0), (np.append(r, 5), np.append(c, 6))), shape=dense.shape)
    assert matrix.nnz == len(r) + 1
    train = dense > 0
    users, pos, neg = user_uniform_triples(matrix, generator=torch.Generator().manual_seed(0))
    assert len(users) == len(pos) == len(neg) == train.sum() and users.dtype == pos.dtype == neg.dtype == torch.long
    again = user_uniform_triples(matrix, generator=torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) for a, b in zip((users, pos, neg), again))
    for rounds in (layers.MAX_RESAMPLE_ROUNDS, 0):  # 0: every negative by the direct draw
        monkeypatch.setattr(layers, "MAX_RESAMPLE_ROUNDS", rounds)
        users, pos, neg = user_uniform_triples(matrix, 60_000, generator=torch.Generator().manual_seed(1))
        assert train[users, pos].all() and not train[users, neg].any()
        eligible = [0, 3, 4, 6, 7]
        assert set(users.tolist()) == set(eligible)
        # uniform over users, a user's train items and its free items: every cell within 6 sd of its mean
        counts = np.bincount(users.numpy(), minlength=8)[eligible]
        mean = 60_000 / len(eligible)
        assert (np.abs(counts - mean) < 6 * np.sqrt(mean)).all(), counts
        for u in (0, 3):
            for items, size in ((pos[users == u], train[u].sum()), (neg[users == u], (~train[u]).sum())):
                n = len(items)
                hist = np.bincount(items.numpy(), minlength=12)
                hist = hist[hist > 0]
                assert len(hist) == size and (np.abs(hist - n / size) < 6 * np.sqrt(n / size)).all(), (u, hist)
        assert (neg[users == 4] == 11).all()
    # an epoch in batches: width-0 rows, the contract's (rows, users, *extra)
    batches = list(triple_batches(matrix, 7, generator=torch.Generator().manual_seed(0)))
    assert [len(b[1]) for b in batches] == [7, 7, 7, 7, train.sum() - 28]
    rows, users_, positives, negatives = batches[0]
    assert rows.shape == (7, 0) and isinstance(users_, np.ndarray)
    assert torch.equal(torch.from_numpy(np.concatenate([b[1] for b in batches])), again[0])


# --------------------------------------------------------------------------------------------
# stage 1: HGCF


def test_hgcf_registered_and_config_checks(data):
    assert MODELS["hgcf"] is HGCF and HGCF.display_name == "HGCF"
    assert model_config(params_for(), "hgcf", SPLIT) == HGCFConfig(**HGCF_HYPER)
    bad = HGCFConfig(**{**HGCF_HYPER, "emb_size": 1, "n_layers": 0, "momentum": 1.0, "margin": -0.1, "sampling": "triples",
                        "min_epochs": -1})
    assert {key for key, _ in bad.problems()} == {"emb_size", "n_layers", "momentum", "margin", "sampling", "min_epochs"}
    # the code defaults are the committed runs' (pair batches of users, no floor under the patience stop)
    assert (HGCFConfig().sampling, HGCFConfig().min_epochs, HGCFConfig().emb_size) == ("pairs", 0, 64)
    with pytest.raises(ValueError, match="needs the training graph"):
        HGCF(HGCFConfig(**HGCF_HYPER), N_USERS, N_ITEMS)


def test_hgcf_propagation_by_hand(data):
    model = build_model(params_for(), "hgcf", SPLIT, 1, N_USERS, N_ITEMS, data=data)
    graph = torch.from_numpy(row_normalized_adjacency(data.train).toarray()).double()
    ego = torch.cat([model.user_embedding, model.item_embedding]).detach().double()
    h0 = logmap0(ego)
    h1 = graph @ h0
    expected = expmap0(h1 + graph @ h1)  # layers 1..2 summed, layer 0 left out
    users, items = model.propagate()
    torch.testing.assert_close(torch.cat([users, items]).double(), expected, rtol=1e-4, atol=1e-5)


def test_hgcf_loss_falls_and_points_stay_on_the_manifold(data):
    model = build_model(params_for(), "hgcf", SPLIT, 1, N_USERS, N_ITEMS, data=data)
    optimizer = model.optimizer()
    users = np.arange(N_USERS)
    rows = dense_rows(data.train, users)
    losses = []
    for _ in range(30):
        optimizer.zero_grad()
        loss = model.loss(rows, users)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[0] == pytest.approx(0.2 * data.train.nnz, rel=0.2)  # near-origin start: every pair ~ the margin
    assert np.mean(losses[-3:]) < 0.5 * losses[0]
    for weight in (model.user_embedding, model.item_embedding):
        assert_on_hyperboloid(weight.detach())
    users_final, items_final = model.final_embeddings()
    assert users_final.shape == (N_USERS, HGCF_HYPER["emb_size"]) and users_final.dtype == torch.float32
    assert_on_hyperboloid(items_final)
    # the state dict holds plain tensors (loadable with weights_only=True) and reloads exactly
    state = model.state_dict()
    assert {type(v) for v in state.values()} == {torch.Tensor}
    other = build_model(params_for(), "hgcf", SPLIT, 2, N_USERS, N_ITEMS, data=data)
    other.load_state_dict(state)
    torch.testing.assert_close(other.scores(None, users), model.scores(None, users))


def assert_on_hyperboloid(points: torch.Tensor) -> None:
    """<x, x>_L = -1 up to the rounding of float32 coordinates, whatever the CPU's kernels.

    A point projected onto the hyperboloid in float32 carries x_0 and every x_i rounded to
    float32 (relative error <= eps/2 each), so <x, x>_L = -x_0^2 + |x_s|^2 is off by at most about
    eps * (x_0^2 + |x_s|^2): the bound scales with the point's size (a point far from the origin
    has x_0^2 in the thousands), not a fixed absolute tolerance fitted to one machine's rounding.
    Two more eps of slack cover the projection's own sqrt and sum.
    """
    assert points.dtype == torch.float32
    x = points.double()
    scale = x[:, 0] ** 2 + (x[:, 1:] ** 2).sum(-1)
    error = (minkowski_norm2(x) + 1.0).abs()
    bound = 3 * torch.finfo(torch.float32).eps * scale
    assert (error <= bound).all(), f"off the hyperboloid: worst error/bound {(error / bound).max().item():.2f}"


def test_hgcf_triples_are_the_pair_loss_of_the_same_triples(data):
    """``loss(rows, users, positives, negatives)`` (the released triples) is the pair form's loss
    when given the pairs and negatives the pair form draws: one loss, two ways to pick triples."""
    model = build_model(params_for(), "hgcf", SPLIT, 1, N_USERS, N_ITEMS, data=data)
    users = np.arange(N_USERS)
    rows = dense_rows(data.train, users)
    torch.manual_seed(3)
    pair_loss = model.loss(rows, users)
    torch.manual_seed(3)
    b, pos, neg = sample_pairs(rows)
    triple_loss = model.loss(torch.zeros(len(b), 0), users[b.numpy()], pos, neg)
    assert torch.equal(pair_loss, triple_loss)
    empty = torch.zeros(0, dtype=torch.long)
    zero = model.loss(torch.zeros(0, 0), users[:0], empty, empty)
    zero.backward()
    assert zero.item() == 0.0


def test_hgcf_released_sampling_trains(data, tmp_path):
    """sampling: users (the released user-uniform triples, batches of batch_size triples) learns
    the planted groups through the shared trainer."""
    params = params_for(sampling="users", batch_size=64, epochs=10)
    model = build_model(params, "hgcf", SPLIT, 1, N_USERS, N_ITEMS, data=data)
    batches = list(model.batches(data.train))
    assert sum(len(b[1]) for b in batches) == data.train.nnz and max(len(b[1]) for b in batches) == 64
    identity = {"model": "hgcf", "split": SPLIT, "seed": 1, "config": dataclasses.asdict(model.config)}
    metrics = train_run(model, data, TRAINING, EVALUATION, tmp_path / "run", identity, 1)
    assert metrics["test"]["recall@20"] > random_recall(data, 20) + 0.2


def test_min_epochs_keeps_the_patience_stop_away(data, tmp_path):
    """A config's min_epochs (HGCF's released rule: not before epoch 30): the trainer's patience
    does not stop the run before the end of that epoch; without it the run stops as before. A
    learning rate below float32 resolution keeps the validation metric flat, so the first
    evaluation stays the best."""
    training = dataclasses.replace(TRAINING, patience=8)
    trained = {}
    for floor in (0, 17):
        params = params_for(lr=1e-30, epochs=40, min_epochs=floor)
        model = build_model(params, "hgcf", SPLIT, 1, N_USERS, N_ITEMS, data=data)
        identity = {"model": "hgcf", "split": SPLIT, "seed": 1, "config": dataclasses.asdict(model.config)}
        metrics = train_run(model, data, training, EVALUATION, tmp_path / str(floor), identity, 1)
        assert metrics["best_epoch"] == 5
        trained[floor] = metrics["epochs_trained"]
    assert trained == {0: 12, 17: 17}  # stops before epoch best + patience = 13; with the floor, before 18
    # the epoch line's projection counts the floor
    from pipeline.training.trainer import _eta

    assert "stops after epoch 12" in _eta(6, 40, 5, training, [1.0], [1.0])
    assert "stops after epoch 30" in _eta(6, 40, 5, training, [1.0], [1.0], min_epochs=30)


def test_hgcf_resumes_exactly_after_a_stop(data, tmp_path):
    """The Riemannian optimiser's state (momentum) goes through the trainer's checkpoint."""
    identity = {"model": "hgcf", "split": SPLIT, "seed": 1, "config": HGCF_HYPER}
    full = build_model(params_for(), "hgcf", SPLIT, 1, N_USERS, N_ITEMS, data=data)
    expected = train_run(full, data, TRAINING, EVALUATION, tmp_path / "full", identity, 1)
    first = build_model(params_for(), "hgcf", SPLIT, 1, N_USERS, N_ITEMS, data=data)
    assert train_run(first, data, TRAINING, EVALUATION, tmp_path / "cut", identity, 1, stop_after_epoch=5) == {}
    resumed = build_model(params_for(), "hgcf", SPLIT, 7, N_USERS, N_ITEMS, data=data)  # other initial weights
    assert train_run(resumed, data, TRAINING, EVALUATION, tmp_path / "cut", identity, 1) == expected
    assert (tmp_path / "full" / "history.csv").read_bytes() == (tmp_path / "cut" / "history.csv").read_bytes()


def test_stage1_writes_loadable_embeddings_deterministically(stage1, data, data_dir, tmp_path, monkeypatch):
    metrics, folder = stage1
    assert metrics["test"]["recall@20"] > random_recall(data, 20) + 0.2
    emb = load_hyperbolic_embeddings(folder, N_USERS, N_ITEMS)
    assert emb.users.shape == (N_USERS, HGCF_HYPER["emb_size"]) and emb.items.dtype == np.float32
    # the files hold the best state's final embeddings
    saved = torch.load(folder / "model.pt", weights_only=True)
    assert saved["epoch"] == metrics["best_epoch"]
    model = build_model(params_for(), "hgcf", SPLIT, 1, N_USERS, N_ITEMS, data=data)
    model.load_state_dict(saved["model"])
    np.testing.assert_array_equal(model.final_embeddings()[1].numpy(), emb.items)
    monkeypatch.chdir(tmp_path)
    assert train_and_export(params_for(), SPLIT, "hgcf", str(data_dir), str(tmp_path / "again")) == metrics
    for name in ("user_emb.npy", "item_emb.npy"):
        assert (folder / name).read_bytes() == (tmp_path / "again" / name).read_bytes()
    # a broken artifact is refused
    np.save(tmp_path / "again" / "item_emb.npy", emb.items * 2.0)
    with pytest.raises(ValueError, match="not points of the hyperboloid"):
        load_hyperbolic_embeddings(tmp_path / "again")
    with pytest.raises(ValueError, match="rows"):
        load_hyperbolic_embeddings(folder, N_USERS + 1)


# --------------------------------------------------------------------------------------------
# stage 2: HDRM


def hdrm_config(**overrides) -> HDRMConfig:
    cfg = HDRMConfig(**{**HDRM_HYPER, **overrides})
    assert cfg.problems() == []
    return cfg


def test_hdrm_registered_and_config_checks(stage1):
    assert MODELS["hdrm"] is HDRM and HDRM.display_name == "HDRM" and HDRM.requires == {"hyperbolic"}
    assert model_config(params_for(), "hdrm", SPLIT) == HDRMConfig(**HDRM_HYPER)
    bad = HDRMConfig(**{**HDRM_HYPER, "act": "gelu", "alpha": 1.5, "mix": -0.1, "noise_scale": 0.0, "sampling": "pairs"})
    assert {key for key, _ in bad.problems()} == {"act", "alpha", "mix", "noise_scale", "sampling"}
    # the code defaults are the committed runs' (user batches, [200, 600], at most 20 epochs)
    default = HDRMConfig()
    assert (default.sampling, default.dims, default.epochs, default.batch_size, default.geometric_noise) == ("users", [200, 600], 20, 300, False)
    with pytest.raises(ValueError, match="stage-1 hyperbolic embeddings"):
        HDRM(hdrm_config(), N_USERS, N_ITEMS)
    emb = load_hyperbolic_embeddings(stage1[1])
    with pytest.raises(ValueError, match="rows"):
        HDRM(hdrm_config(), N_USERS - 1, N_ITEMS, hyperbolic=emb)


def test_geometric_noise_by_hand():
    z0 = torch.tensor([[1.0, -2.0, 0.0], [3.0, 2.0, -1.0]])
    noise = torch.tensor([[-0.5, 0.5, 2.0], [1.0, -1.0, -3.0]])
    mu = torch.tensor([2.0, 0.0, -0.5])
    sigma = torch.tensor([math.sqrt(2.0), math.sqrt(8.0), math.sqrt(0.5)])  # unbiased std over the rows
    signed = torch.tensor([[0.5, -0.5, 0.0], [1.0, 1.0, -3.0]])  # sign(z0) |noise|
    torch.testing.assert_close(geometric_noise(noise, z0), mu + sigma * signed)
    one = geometric_noise(noise[:1], z0[:1])  # one row: std 0, the mean alone
    torch.testing.assert_close(one, z0[:1])


@pytest.mark.parametrize("geometric", [False, True], ids=["gaussian", "geometric-noise"])
def test_vectorised_scoring_equals_the_per_user_loop(geometric):
    """Scoring all items at once equals the released per-user loop (float64, same noise draws)."""
    users, items = random_points(7, 6, seed=3).float(), random_points(11, 6, seed=4).float()
    torch.manual_seed(0)
    model = HDRM(hdrm_config(geometric_noise=geometric, steps=4), 7, 11, hyperbolic=(users, items)).double()
    model.eval()
    rows = (torch.rand(7, 11, generator=torch.Generator().manual_seed(5)) < 0.4).double()
    rows[3] = 0.0  # a user without train items starts from the zero vector
    batch = np.arange(7)
    torch.manual_seed(9)
    fast = model.scores(rows, batch)
    torch.manual_seed(9)
    slow = model.scores_reference(rows, batch)
    assert fast.shape == (7, 11) and fast.dtype == torch.float64 and torch.isfinite(fast).all()
    torch.testing.assert_close(fast, slow, rtol=1e-12, atol=1e-12)
    assert torch.equal(fast.argsort(dim=1, stable=True), slow.argsort(dim=1, stable=True))
    # by hand for one user: -arcosh(-<g, i>_L)^2 with the generated point g
    torch.manual_seed(9)
    g = model.generate(rows, batch)
    inner = -g[2, 0] * model.item_points[:, 0] + model.item_points[:, 1:] @ g[2, 1:]
    torch.testing.assert_close(fast[2], -torch.arccosh(-inner) ** 2, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("sampling", ["users", "triples"])
def test_hdrm_loss_falls(stage1, data, sampling):
    """Full-batch steps: all users' train pairs (users), or one epoch's triples as one batch (triples)."""
    emb = load_hyperbolic_embeddings(stage1[1])
    torch.manual_seed(0)
    model = HDRM(hdrm_config(dropout=0.0, lr=3e-3, alpha=0.5, sampling=sampling, batch_size=data.train.nnz), N_USERS, N_ITEMS,
                 hyperbolic=emb)
    optimizer = model.optimizer()
    assert isinstance(optimizer, torch.optim.Adam)
    if sampling == "users":
        users = np.arange(N_USERS)
        batch = (dense_rows(data.train, users), users)
    else:
        (batch,) = list(model.batches(data.train))
        assert batch[0].shape == (data.train.nnz, 0)
    losses = []
    for _ in range(40):
        optimizer.zero_grad()
        loss = model.loss(*batch)
        assert torch.isfinite(loss)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5]), losses
    # only the denoisers learn: the frozen embeddings are buffers outside the state dict
    assert set(model.state_dict()) >= {"user_denoiser.emb_layer.weight", "item_denoiser.emb_layer.weight"}
    assert not any(k in model.state_dict() for k in ("user_tangent", "item_tangent", "item_points"))


def test_hdrm_triples_are_the_pair_loss_of_the_same_triples(stage1, data):
    """``loss(rows, users, positives, negatives)`` (the released triples) is the user batches'
    loss when given the pairs and negatives those draw, with the same timesteps, noise and
    dropout draws after them: one loss, two ways to pick triples."""
    emb = load_hyperbolic_embeddings(stage1[1])
    torch.manual_seed(0)
    model = HDRM(hdrm_config(), N_USERS, N_ITEMS, hyperbolic=emb).train()
    users = np.arange(N_USERS)
    rows = dense_rows(data.train, users)
    torch.manual_seed(3)
    before = torch.get_rng_state()
    b, pos, neg = sample_pairs(rows)
    after = torch.get_rng_state()
    torch.set_rng_state(before)
    pair_loss = model.loss(rows, users)
    torch.set_rng_state(after)
    triple_loss = model.loss(torch.zeros(len(b), 0), users[b.numpy()], pos, neg)
    assert torch.equal(pair_loss, triple_loss)
    empty = torch.zeros(0, dtype=torch.long)
    zero = model.loss(torch.zeros(0, 0), users[:0], empty, empty)
    zero.backward()
    assert zero.item() == 0.0


def test_hdrm_train_run_beats_random(stage1, data, tmp_path):
    emb = load_hyperbolic_embeddings(stage1[1], N_USERS, N_ITEMS)
    model = build_model(params_for(), "hdrm", SPLIT, 1, N_USERS, N_ITEMS, data=data, hyperbolic=emb)
    identity = {"model": "hdrm", "split": SPLIT, "seed": 1, "config": dataclasses.asdict(model.config)}
    metrics = train_run(model, data, TRAINING, EVALUATION, tmp_path / "run", identity, 1)
    for k in (10, 20):
        chance = random_recall(data, k)
        assert metrics["test"][f"recall@{k}"] > chance + 0.2, (k, metrics["test"], chance)
    again = build_model(params_for(), "hdrm", SPLIT, 1, N_USERS, N_ITEMS, data=data, hyperbolic=emb)
    assert train_run(again, data, TRAINING, EVALUATION, tmp_path / "run2", identity, 1) == metrics


def test_train_stage_reads_the_stage1_folder(stage1, data_dir, tmp_path, monkeypatch):
    """`python -m pipeline train --hyperbolic <folder>`: HDRM needs the folder, other variants refuse it,
    and the run records which stage-1 embeddings it was trained on."""
    from pipeline.stages.train import main as train_main

    monkeypatch.chdir(tmp_path)
    params = {**params_for(), "models": {**params_for()["models"], "hdrm": {"defaults": {**HDRM_HYPER, "epochs": TRAINING.eval_every}}}}
    with pytest.raises(ValueError, match="--hyperbolic"):
        train_main(params, SPLIT, "hdrm", 1, str(data_dir), str(tmp_path / "no_stage1"))
    with pytest.raises(ValueError, match="does not use hyperbolic embeddings"):
        train_main(params, SPLIT, "hgcf", 1, str(data_dir), str(tmp_path / "wrong"), hyperbolic_dir=str(stage1[1]))
    metrics = train_main(params, SPLIT, "hdrm", 1, str(data_dir), str(tmp_path / "run"), hyperbolic_dir=str(stage1[1]))
    saved = torch.load(tmp_path / "run" / "model.pt", map_location="cpu", weights_only=True)
    emb = load_hyperbolic_embeddings(stage1[1])
    import hashlib

    assert saved["identity"]["hyperbolic"] == hashlib.sha256(emb.users.tobytes() + emb.items.tobytes()).hexdigest()
    assert metrics["best_epoch"] >= 1
