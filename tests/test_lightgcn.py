"""LightGCN: normalised adjacency, pair sampling, BPR training, ranking quality, and the
item-embedding stage (``pipeline.stages.embed.main``)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from pipeline.config import EvaluationConfig, TrainingConfig, model_config
from pipeline.data.dataset import InteractionData, load_interactions
from planted import write_planted, train_and_export
from pipeline.models import MODELS
from pipeline.models.lightgcn import LightGCN, LightGCNConfig, normalized_adjacency
from pipeline.training.fitting import build_model
from pipeline.training.trainer import train_run

N_USERS, N_ITEMS, GROUPS = 60, 40, 3
SPLIT = "tiny_clean"
TRAINING = TrainingConfig(device="cpu", threads=1, eval_every=5, patience=20, select_metric="recall@20", checkpoint_every=5)
EVALUATION = EvaluationConfig(topk=(10, 20), batch_size=25)
HYPER = dict(emb_size=16, n_layers=2, lr=0.02, weight_decay=0.0, reg_weight=1e-4, batch_size=16, epochs=20)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return write_planted(tmp_path_factory.mktemp("tiny_clean"), N_USERS, N_ITEMS, GROUPS)


@pytest.fixture(scope="module")
def data(data_dir) -> InteractionData:
    return load_interactions(data_dir)


def params_for(**overrides) -> dict:
    """The parts of params.yaml that build_model, training and the embedding stage read."""
    return {
        "models": {"lightgcn": {"defaults": {**HYPER, **overrides}}},
        "embeddings": {"seed": 1},
        "training": dataclasses.asdict(TRAINING),
        "evaluation": {"topk": list(EVALUATION.topk), "batch_size": EVALUATION.batch_size},
    }


def make(data: InteractionData, seed: int = 1, **overrides) -> LightGCN:
    return build_model(params_for(**overrides), "lightgcn", SPLIT, seed, data.n_users, data.n_items, data=data)


def interaction_data(train: np.ndarray) -> InteractionData:
    m = sp.csr_matrix(train.astype(np.float32))
    empty = sp.csr_matrix(m.shape, dtype=np.float32)
    return InteractionData(m.shape[0], m.shape[1], m, empty, empty, m.copy())


# --------------------------------------------------------------------------------------------


def test_registered_and_config_checks():
    assert MODELS["lightgcn"] is LightGCN and LightGCN.display_name == "LightGCN"
    assert model_config(params_for(), "lightgcn", SPLIT) == LightGCNConfig(**HYPER)
    assert LightGCNConfig(**HYPER).problems() == []
    bad = LightGCNConfig(**{**HYPER, "emb_size": 0, "n_layers": -1, "lr": 0.0, "reg_weight": -1.0})
    assert {key for key, _ in bad.problems()} == {"emb_size", "n_layers", "lr", "reg_weight"}


def test_needs_data():
    with pytest.raises(ValueError, match="needs the training graph"):
        LightGCN(LightGCNConfig(**HYPER), 3, 3)


def test_normalized_adjacency_matches_dense_hand_computation():
    r = np.array([[1, 1, 0], [0, 1, 0], [0, 0, 0]], dtype=np.float32)  # user 2 and item 2 have no edge
    a = np.zeros((6, 6))
    a[:3, 3:], a[3:, :3] = r, r.T
    degree = a.sum(1)
    expected = np.zeros_like(a)
    for i in range(6):
        for j in range(6):
            if a[i, j]:
                expected[i, j] = 1.0 / np.sqrt(degree[i] * degree[j])
    # spot checks of the formula itself: user 0 (degree 2) - item 1 (degree 2) = 1/2
    assert expected[0, 4] == pytest.approx(0.5) and expected[1, 4] == pytest.approx(1 / np.sqrt(2))
    np.testing.assert_allclose(normalized_adjacency(sp.csr_matrix(r)).toarray(), expected, rtol=1e-6)
    model = LightGCN(LightGCNConfig(**HYPER), 3, 3, data=interaction_data(r))
    np.testing.assert_allclose(model.adjacency.cpu.toarray(), expected, rtol=1e-6)


def test_propagation_is_mean_of_layers():
    r = np.array([[1, 1, 0], [0, 1, 1]], dtype=np.float32)
    model = LightGCN(LightGCNConfig(**{**HYPER, "n_layers": 2}), 2, 3, data=interaction_data(r))
    adj = torch.from_numpy(normalized_adjacency(sp.csr_matrix(r)).toarray())
    ego = torch.cat([model.user_embedding.weight, model.item_embedding.weight]).detach()
    final = (ego + adj @ ego + adj @ (adj @ ego)) / 3
    users, items = model.propagate()
    torch.testing.assert_close(torch.cat([users, items]).detach(), final)
    torch.testing.assert_close(model.scores(None, np.array([1, 0])), final[[1, 0]] @ final[2:].T)
    torch.testing.assert_close(model.final_embeddings()[1], final[2:])


def test_sampled_pairs(data):
    torch.manual_seed(0)
    model = make(data)
    train = data.train.toarray() > 0
    users = np.array([5, 0, 17, 42, 5])  # a repeated user gets its pairs twice
    for _ in range(20):
        u, pos, neg = (t.numpy() for t in model.sample_pairs(users))
        assert len(u) == len(pos) == len(neg) == sum(train[x].sum() for x in users)
        assert train[u, pos].all()  # positives are the user's train items ...
        assert not train[u, neg].any()  # ... negatives never are
        for x in set(users.tolist()):  # every train item of the user, once per occurrence in the batch
            expected = np.sort(np.tile(np.flatnonzero(train[x]), (users == x).sum()))
            assert np.array_equal(np.sort(pos[u == x]), expected)
        assert np.array_equal(u, np.repeat(users, train[users].sum(1)))  # grouped in batch order


def test_negatives_for_nearly_full_and_full_users():
    r = np.zeros((3, 50), dtype=np.float32)
    r[0, :49] = 1  # one possible negative: item 49
    r[1, :] = 1  # no possible negative: its pairs are dropped
    r[2, :3] = 1
    model = LightGCN(LightGCNConfig(**HYPER), 3, 50, data=interaction_data(r))
    torch.manual_seed(0)
    u, pos, neg = model.sample_pairs(np.array([0, 1, 2]))
    assert (u == 1).sum() == 0
    assert (neg[u == 0] == 49).all() and (u == 0).sum() == 49
    assert not np.isin(neg[u == 2].numpy(), [0, 1, 2]).any()
    # the exact fallback: uniform over the complement of the user's train items
    r[2, [7, 8, 20, 49]] = 1
    model = LightGCN(LightGCNConfig(**HYPER), 3, 50, data=interaction_data(r))
    drawn = model._complement_draw(torch.tensor([2] * 20000 + [0, 1])).numpy()
    assert drawn[-2:].tolist() == [49, -1]
    counts = np.bincount(drawn[:-2], minlength=50)
    allowed = r[2] == 0
    assert (counts[~allowed] == 0).all() and (counts[allowed] > 0).all()
    assert counts[allowed].min() > 0.7 * 20000 / allowed.sum()  # about uniform (43 items, ~465 each)


def test_sampling_uses_the_global_seed(data):
    model = make(data)
    torch.manual_seed(3)
    first = model.sample_pairs(np.arange(10))[2]
    torch.manual_seed(3)
    assert torch.equal(model.sample_pairs(np.arange(10))[2], first)


def test_bpr_loss_falls(data):
    model = make(data)
    optimizer = model.optimizer()
    assert isinstance(optimizer, torch.optim.Adam)
    users = np.arange(N_USERS)
    losses = []
    for _ in range(40):
        optimizer.zero_grad()
        loss = model.loss(None, users)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[0] == pytest.approx(np.log(2), abs=0.05)  # small initial embeddings: BPR ~ log 2
    assert losses[-1] < 0.5 * losses[0]


def test_eval_scores_are_cached_until_the_weights_change(data):
    model = make(data)
    model.eval()
    first = model.scores(None, np.arange(5))
    assert model.scores(None, np.arange(5)).data_ptr() != first.data_ptr()  # new tensor, same values
    torch.testing.assert_close(model.scores(None, np.arange(5)), first)
    with torch.no_grad():
        model.item_embedding.weight.add_(1.0)
    assert not torch.allclose(model.scores(None, np.arange(5)), first)


def random_recall(data: InteractionData, k: int) -> float:
    """Expected test recall@k of a random ranking (train and valid items masked)."""
    candidates = data.n_items - np.diff((data.train + data.valid).tocsr().indptr)
    return float(np.mean(np.minimum(1.0, k / candidates)))


def test_train_run_beats_random(data, tmp_path):
    model = make(data)
    identity = {"model": "lightgcn", "split": SPLIT, "seed": 1, "config": dataclasses.asdict(model.config)}
    metrics = train_run(model, data, TRAINING, EVALUATION, tmp_path / "run", identity, 1)
    for k in (10, 20):
        chance = random_recall(data, k)
        assert metrics["test"][f"recall@{k}"] > chance + 0.2, (k, metrics["test"], chance)
    assert metrics["test"]["recall@20"] > 0.9  # chance is about 0.63 here


def test_train_lightgcn_writes_embeddings_deterministically(data_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the timing file goes to ./logs/timing
    params = params_for(epochs=10)
    first = train_and_export(params, SPLIT, "lightgcn", str(data_dir), str(tmp_path / "a"))
    emb = np.load(tmp_path / "a" / "item_emb.npy", allow_pickle=False)
    assert emb.shape == (N_ITEMS, HYPER["emb_size"]) and emb.dtype == np.float32
    assert (tmp_path / "logs" / "timing" / f"{SPLIT}_lightgcn_seed1.json").is_file()
    assert not list((tmp_path / "a").glob(".*.tmp"))
    # the embeddings are those of the best state in model.pt
    saved = torch.load(tmp_path / "a" / "model.pt", weights_only=True)
    assert saved["epoch"] == first["best_epoch"]
    model = make(load_interactions(data_dir))
    model.load_state_dict(saved["model"])
    np.testing.assert_array_equal(model.final_embeddings()[1].numpy(), emb)

    second = train_and_export(params, SPLIT, "lightgcn", str(data_dir), str(tmp_path / "b"))
    assert second == first
    assert (tmp_path / "a" / "item_emb.npy").read_bytes() == (tmp_path / "b" / "item_emb.npy").read_bytes()
    # the export alone, from the same run into another folder, writes the same bytes; it refuses a
    # model that is no embedding model and a --tuned for a variant without a grid
    from pipeline.stages.embed import main as export

    assert export(params, SPLIT, "lightgcn", str(data_dir), str(tmp_path / "a"), str(tmp_path / "c")) == {
        "user_emb.npy": (N_USERS, HYPER["emb_size"]), "item_emb.npy": (N_ITEMS, HYPER["emb_size"])}
    for name in ("user_emb.npy", "item_emb.npy"):
        assert (tmp_path / "c" / name).read_bytes() == (tmp_path / "a" / name).read_bytes()
    with pytest.raises(ValueError, match="exports the embedding models"):
        export({**params, "models": {**params["models"], "mf": {}}}, SPLIT, "mf", str(data_dir), str(tmp_path / "a"), str(tmp_path / "d"))
    with pytest.raises(ValueError, match="exactly when it has a grid"):
        export(params, SPLIT, "lightgcn", str(data_dir), str(tmp_path / "a"), str(tmp_path / "d"), tuned_path="selected.json")


def test_the_graph_product_backward_is_the_same_matrix(data):
    """A~ is symmetric bit for bit, so the operator's backward product (A~^T) is A~ itself."""
    adjacency = make(data).adjacency
    for name in ("indptr", "indices", "data"):
        np.testing.assert_array_equal(getattr(adjacency.cpu_t, name), getattr(adjacency.cpu, name))
