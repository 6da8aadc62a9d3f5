"""The classic baselines of DiffRec's tables (MostPop, MF, CDAE, MultiDAE, MultiDAE++, MultiVAE,
CODIGEM): registration and config checks, score shapes, exact MostPop counts, BPR negatives,
dropout off at evaluation, hand-computed losses, and a real training run of each through the
shared trainer on the planted dataset, beating a random ranking."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from pipeline.config import ConfigError, EvaluationConfig, TrainingConfig, model_config
from pipeline.data.dataset import InteractionData, dense_rows, load_interactions
from pipeline.models import MODELS, fast
from pipeline.models.cdae import CDAE
from pipeline.models.codigem import CODIGEM
from pipeline.models.lightgcn import LightGCN, LightGCNConfig
from pipeline.models.mf import MF
from pipeline.models.mostpop import MostPop
from pipeline.models.multidae import MultiDAE
from pipeline.models.multidaepp import MultiDAEPP
from pipeline.models.multivae import MultiVAE
from pipeline.training.fitting import build_model
from pipeline.training.trainer import train_run
from planted import write_planted

N_USERS, N_ITEMS, GROUPS = 60, 40, 3
SPLIT = "tiny_clean"
TRAINING = TrainingConfig(device="cpu", threads=1, eval_every=5, patience=20, select_metric="recall@20", checkpoint_every=5)
EVALUATION = EvaluationConfig(topk=(10, 20), batch_size=25)

_DAE = dict(lr=0.01, reg_weight=0.0, batch_size=16, epochs=20, dims=[16], dropout=0.5)
HYPER = {
    "mostpop": {},
    "mf": dict(emb_size=16, lr=0.02, weight_decay=0.0, reg_weight=1e-4, batch_size=16, epochs=20),
    "cdae": dict(lr=0.01, reg_weight=0.01, batch_size=16, epochs=20, hidden_size=16, corruption=0.2,
                 hidden_activation="sigmoid", loss="bce"),
    "multidae": _DAE,
    "multidaepp": dict(_DAE, schedule="linear-var", steps=5, noise_scale=0.1, noise_min=0.01, noise_max=0.1,
                       max_beta=0.999, beta_fixed=True),
    "multivae": dict(_DAE, anneal_cap=0.2, total_anneal_steps=20),
    "codigem": dict(lr=0.01, weight_decay=0.0, batch_size=16, epochs=20, steps=3, beta=1e-4, hidden_size=16,
                    hidden_layers=2),
}
CLASSES = {"mostpop": MostPop, "mf": MF, "cdae": CDAE, "multidae": MultiDAE, "multidaepp": MultiDAEPP,
           "multivae": MultiVAE, "codigem": CODIGEM}
DISPLAY = {"mostpop": "MostPop", "mf": "MF", "cdae": "CDAE", "multidae": "MultiDAE", "multidaepp": "MultiDAE++",
           "multivae": "MultiVAE", "codigem": "CODIGEM"}
# impossible values per model -> the keys problems() must name
BAD = {
    "mf": ({"emb_size": 0, "lr": 0.0, "reg_weight": -1.0}, {"emb_size", "lr", "reg_weight"}),
    "cdae": ({"corruption": 1.0, "hidden_activation": "softmax", "loss": "hinge", "hidden_size": 0},
             {"corruption", "hidden_activation", "loss", "hidden_size"}),
    "multidae": ({"dims": [], "dropout": -0.1, "reg_weight": -1.0}, {"dims", "dropout", "reg_weight"}),
    "multidaepp": ({"steps": 0, "noise_min": 0.5, "noise_max": 0.1, "schedule": "cosine", "noise_scale": 0.0},
                   {"steps", "noise_min", "schedule", "noise_scale"}),
    "multivae": ({"anneal_cap": -0.1, "total_anneal_steps": -1, "dims": [16, 0]},
                 {"anneal_cap", "total_anneal_steps", "dims"}),
    "codigem": ({"beta": 1.0, "steps": 0, "hidden_layers": 0, "weight_decay": -1.0},
                {"beta", "steps", "hidden_layers", "weight_decay"}),
}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> InteractionData:
    return load_interactions(write_planted(tmp_path_factory.mktemp("tiny_clean"), N_USERS, N_ITEMS, GROUPS))


def params_for(name: str, **overrides) -> dict:
    return {"models": {name: {"defaults": {**HYPER[name], **overrides}}}, "training": {"threads": 1}}


def make(name: str, data: InteractionData, seed: int = 1, **overrides):
    return build_model(params_for(name, **overrides), name, SPLIT, seed, data.n_users, data.n_items, data=data)


def matrices(train: np.ndarray, valid: np.ndarray | None = None, test: np.ndarray | None = None) -> InteractionData:
    m = sp.csr_matrix(train.astype(np.float32))
    empty = sp.csr_matrix(m.shape, dtype=np.float32)
    v = empty if valid is None else sp.csr_matrix(valid.astype(np.float32))
    t = empty if test is None else sp.csr_matrix(test.astype(np.float32))
    return InteractionData(m.shape[0], m.shape[1], m, v, t, m.copy())


def random_recall(data: InteractionData, k: int) -> float:
    """Expected test recall@k of a random ranking (train and valid items masked)."""
    candidates = data.n_items - np.diff((data.train + data.valid).tocsr().indptr)
    return float(np.mean(np.minimum(1.0, k / candidates)))


def fit(name: str, data: InteractionData, run_dir, seed: int = 1, **overrides) -> dict:
    model = make(name, data, seed, **overrides)
    identity = {"model": name, "split": SPLIT, "seed": seed, "config": dataclasses.asdict(model.config)}
    return train_run(model, data, TRAINING, EVALUATION, run_dir, identity, seed, timing_path=run_dir / "timing.json")


# ------------------------------------------------------------------------ registry and configs


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_registered_with_config(name):
    cls = CLASSES[name]
    assert MODELS[name] is cls and cls.display_name == DISPLAY[name]
    cfg = model_config(params_for(name), name, SPLIT)
    assert cfg == cls.Config(**HYPER[name]) and cfg.problems() == []
    for method in ("input_matrix", "optimizer", "loss", "scores", "n_parameters"):
        assert callable(getattr(cls, method))


@pytest.mark.parametrize("name", sorted(BAD))
def test_config_problems_reject_impossible_values(name):
    bad, keys = BAD[name]
    cfg = CLASSES[name].Config(**{**HYPER[name], **bad})
    named = set()
    for key, _ in cfg.problems():
        named.update((key,) if isinstance(key, str) else key)
    assert keys <= named, (keys, cfg.problems())
    with pytest.raises(ConfigError, match=f"models.{name}.defaults"):
        model_config(params_for(name, **bad), name, SPLIT)


def test_mf_config_has_no_layers():
    with pytest.raises(ConfigError, match="unknown hyperparameter"):
        model_config(params_for("mf", n_layers=2), "mf", SPLIT)


# ------------------------------------------------------------------------ contract


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_scores_shape_and_determinism_in_eval(data, name):
    """(len(users), n_items) scores; in evaluation mode dropout/corruption is off: equal calls."""
    model = make(name, data)
    users = np.array([7, 0, 31, 7])
    rows = dense_rows(model.input_matrix(data), users)
    model.eval()
    first = model.scores(rows, users)
    assert first.shape == (len(users), N_ITEMS) and first.dtype == torch.float32
    assert torch.isfinite(first).all()
    torch.testing.assert_close(model.scores(rows, users), first, rtol=0, atol=0)
    torch.testing.assert_close(first[0], first[3], rtol=0, atol=0)  # the same user twice
    assert model.n_parameters() == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", ["cdae", "multidae", "multidaepp", "multivae"])
def test_dropout_is_on_in_training_mode_only(data, name):
    model = make(name, data)
    users = np.arange(10)
    rows = dense_rows(data.train, users)
    model.train()
    assert not torch.equal(model.scores(rows, users), model.scores(rows, users))  # a fresh mask each call
    model.eval()
    torch.testing.assert_close(model.scores(rows, users), model.scores(rows, users), rtol=0, atol=0)


@pytest.mark.parametrize("name", sorted(set(CLASSES) - {"mostpop"}))
def test_loss_falls_on_full_batches(data, name):
    """A few optimizer steps on all users lower the (seeded, stochastic) loss."""
    model = make(name, data)
    optimizer = model.optimizer()
    users = np.arange(N_USERS)
    rows = dense_rows(model.input_matrix(data), users)
    model.train()
    losses = []
    for _ in range(30):
        optimizer.zero_grad()
        loss = model.loss(rows, users)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < np.mean(losses[:5]), losses


# ------------------------------------------------------------------------ trained through the shared trainer


@pytest.mark.parametrize("name", sorted(set(CLASSES) - {"mostpop"}))
def test_train_run_beats_random(data, name, tmp_path):
    metrics = fit(name, data, tmp_path)
    history = pl.read_csv(tmp_path / "history.csv")
    assert history["loss"][-1] < history["loss"][0], history["loss"].to_list()  # loss falls over the epochs
    for k in (10, 20):
        chance = random_recall(data, k)
        assert metrics["test"][f"recall@{k}"] > chance + 0.25, (k, metrics["test"], chance)
    assert metrics["n_parameters"] > 0


# ------------------------------------------------------------------------ MostPop


def test_mostpop_scores_are_exact_train_counts():
    train = np.zeros((4, 6))
    train[0, [0, 1, 2]] = 1
    train[1, [0, 2]] = 1
    train[2, [0, 5]] = 1
    train[3, [0]] = 1  # counts: item 0: 4, item 1: 1, item 2: 2, items 3 and 4: 0, item 5: 1
    model = MostPop(MostPop.Config(), 4, 6, data=matrices(train))
    scores = model.scores(None, np.array([3, 1]))
    expected = torch.tensor([[4.0, 1.0, 2.0, 0.0, 0.0, 1.0]] * 2)
    assert torch.equal(scores, expected)
    assert model.n_parameters() == 0 and model.trainable is False and model.optimizer() is None
    with pytest.raises(RuntimeError, match="no training loss"):
        model.loss(None, np.arange(2))
    with pytest.raises(ValueError, match="needs the train matrix"):
        MostPop(MostPop.Config(), 4, 6)


def zipf_data(seed: int = 0, n_users: int = 80, n_items: int = 40) -> InteractionData:
    """Every user draws 10 distinct items with p ~ 1/(item+1): popularity predicts the held-out items."""
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, n_items + 1)
    p /= p.sum()
    parts = [np.zeros((n_users, n_items)) for _ in range(3)]
    for u in range(n_users):
        items = rng.choice(n_items, size=10, replace=False, p=p)
        for part, chunk in zip(parts, (items[:6], items[6:8], items[8:])):
            part[u, chunk] = 1
    return matrices(*parts)


def test_mostpop_through_the_trainer(tmp_path):
    data = zipf_data()
    first = fit("mostpop", data, tmp_path / "a")
    assert (first["best_epoch"], first["epochs_trained"], first["n_parameters"]) == (0, 0, 0)
    assert json.loads((tmp_path / "a" / "metrics.json").read_text()) == first
    for k in (10, 20):
        assert first["test"][f"recall@{k}"] > random_recall(data, k) + 0.05, (k, first["test"])
    history = pl.read_csv(tmp_path / "a" / "history.csv")
    assert history.columns[:2] == ["epoch", "loss"] and history["epoch"].to_list() == [0]
    assert history["loss"].null_count() == 1
    assert history["test_recall@20"][0] == pytest.approx(first["test"]["recall@20"], abs=1e-7)
    assert pl.read_parquet(tmp_path / "a" / "per_user.parquet").height == 2 * data.n_users
    saved = torch.load(tmp_path / "a" / "model.pt", weights_only=True)
    assert saved["epoch"] == 0 and saved["optimizer"] == {} and saved["config"] == {}
    assert torch.equal(saved["model"]["popularity"], torch.from_numpy(np.asarray(data.train.sum(0)).ravel().astype(np.float32)))
    assert not (tmp_path / "a" / "resume.pt").exists()
    fit("mostpop", data, tmp_path / "b")
    for name in ("metrics.json", "history.csv", "per_user.parquet", "model.pt"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


# ------------------------------------------------------------------------ MF = LightGCN with 0 layers


def test_mf_is_lightgcn_without_layers(data):
    mf = make("mf", data, seed=5)
    torch.manual_seed(5)  # build_model seeds the same way before constructing
    gcn = LightGCN(LightGCNConfig(**HYPER["mf"], n_layers=0), N_USERS, N_ITEMS, data=data)
    torch.testing.assert_close(mf.user_embedding.weight, gcn.user_embedding.weight, rtol=0, atol=0)
    users = np.array([4, 9, 0])
    torch.testing.assert_close(mf.scores(None, users), gcn.scores(None, users))
    torch.manual_seed(0)
    mf_loss = mf.loss(None, users)
    torch.manual_seed(0)
    torch.testing.assert_close(mf_loss, gcn.loss(None, users))
    # score = <e_u, e_i> of the raw embeddings
    expected = mf.user_embedding.weight[users] @ mf.item_embedding.weight.T
    torch.testing.assert_close(mf.scores(None, users), expected.detach())


def test_bpr_negatives_are_never_observed(data):
    model = make("mf", data)
    train = data.train.toarray() > 0
    users = np.arange(N_USERS)
    torch.manual_seed(2)
    for _ in range(20):
        u, pos, neg = (t.numpy() for t in model.sample_pairs(users))
        assert len(u) == train.sum()
        assert train[u, pos].all() and not train[u, neg].any()


# ------------------------------------------------------------------------ hand-computed pieces


def test_multidae_architecture_and_loss(data):
    model = make("multidae", data, dims=[8, 12], reg_weight=0.5)
    widths = [(layer.in_features, layer.out_features) for layer in model.layers]
    assert widths == [(N_ITEMS, 12), (12, 8), (8, 12), (12, N_ITEMS)]
    model.eval()  # no dropout: the loss is a function of the row
    rows = dense_rows(data.train, np.arange(6))
    h = F.normalize(rows, dim=1)
    for i, layer in enumerate(model.layers):
        h = layer(h) if i == 3 else torch.tanh(layer(h))
    nll = -(torch.log_softmax(h, 1) * rows).sum(1).mean()
    l2 = sum((layer.weight**2).sum() for layer in model.layers)
    torch.testing.assert_close(model.loss(rows), nll + 0.5 * l2)


def test_multivae_kl_annealing_and_loss(data):
    model = make("multivae", data, anneal_cap=0.3, total_anneal_steps=10)
    assert [model.kl_weight(b) for b in (0, 1, 2, 3, 100)] == [0.0, 0.1, 0.2, 0.3, 0.3]
    assert make("multivae", data, total_anneal_steps=0).kl_weight(0) == HYPER["multivae"]["anneal_cap"]
    widths = [(layer.in_features, layer.out_features) for layer in [*model.encoder, *model.decoder]]
    assert widths == [(N_ITEMS, 32), (16, N_ITEMS)]  # dims [16]: items -> (mu, logvar) 16 -> items
    rows = dense_rows(data.train, np.arange(8))
    model.eval()  # z = mu, no dropout; the counter stays
    with torch.no_grad():
        model.batches_seen.fill_(25)  # beta = min(0.3, 25 / 10)
    h = model.encoder[0](F.normalize(rows, dim=1))
    mu, logvar = h[:, :16], h[:, 16:]
    q = torch.distributions.Normal(mu, torch.exp(0.5 * logvar))
    kl = torch.distributions.kl_divergence(q, torch.distributions.Normal(0.0, 1.0)).sum(1).mean()
    nll = -(torch.log_softmax(model.decoder[0](mu), 1) * rows).sum(1).mean()
    torch.testing.assert_close(model.loss(rows), nll + 0.3 * kl)
    assert int(model.batches_seen) == 25
    model.train()
    model.loss(rows)
    assert int(model.batches_seen) == 26 and "batches_seen" in model.state_dict()


def test_multidaepp_trains_on_diffrec_noise_against_the_clean_row(data):
    model = make("multidaepp", data)
    model.eval()  # no dropout, so the only randomness is the timestep and the noise
    rows = dense_rows(data.train, np.arange(10))
    torch.manual_seed(3)
    loss = model.loss(rows)
    torch.manual_seed(3)
    t = torch.randint(0, HYPER["multidaepp"]["steps"], (10,))
    noise = torch.randn_like(rows)
    acp = model.diffusion.alphas_cumprod[t].float().unsqueeze(1)
    noisy = acp.sqrt() * rows + (1 - acp).sqrt() * noise
    assert not torch.allclose(noisy, rows)
    logits = model.forward(noisy)
    torch.testing.assert_close(loss, -(torch.log_softmax(logits, 1) * rows).sum(1).mean())
    torch.testing.assert_close(model.scores(rows), model.forward(rows))  # inference: the clean row


def test_codigem_elbo_by_hand(data):
    model = make("codigem", data, steps=2, beta=0.01)
    rows = dense_rows(data.train, np.arange(5))
    torch.manual_seed(4)
    with fast.switched(False):  # the readable -ELBO (the fast path returns the decoder's term alone)
        loss = model.loss(rows)
    torch.manual_seed(4)
    keep, sd = math.sqrt(0.99), 0.1
    z1 = keep * rows + sd * torch.randn_like(rows)
    z2 = keep * z1 + sd * torch.randn_like(rows)
    normal = torch.distributions.Normal
    re = normal(model.decoder(z1), 1.0).log_prob(rows).sum(1)
    kl_top = (normal(keep * z1, sd).log_prob(z2) - normal(0.0, 1.0).log_prob(z2)).sum(1)
    mu, log_var = model.reverse_nets[0](z2).chunk(2, dim=1)
    kl_1 = (normal(keep * rows, sd).log_prob(z1) - normal(mu, torch.exp(0.5 * log_var)).log_prob(z1)).sum(1)
    torch.testing.assert_close(loss, -(re - kl_top - kl_1).mean())
    # inference: only the decoder ("first AE"), at the mean of q(z_1 | x)
    torch.testing.assert_close(model.scores(rows), model.decoder(keep * rows))
    assert len(make("codigem", data).reverse_nets) == HYPER["codigem"]["steps"] - 1


def test_cdae_user_node_personalises_identical_rows():
    train = np.zeros((3, 8))
    train[0, [1, 2]] = 1
    train[1, [1, 2]] = 1  # the same row as user 0
    train[2, [5]] = 1
    data = matrices(train)
    model = make("cdae", data)
    model.eval()
    rows = dense_rows(data.train, np.array([0, 1]))
    scores = model.scores(rows, np.array([0, 1]))
    assert not torch.allclose(scores[0], scores[1])  # different V_u
    hidden = torch.sigmoid(model.encoder(rows) + model.user_embedding.weight[:2])
    torch.testing.assert_close(scores, model.decoder(hidden))


# ------------------------------------------------------------------------ CUDA (skipped without a GPU)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", sorted(CLASSES))
def test_runs_on_cuda(data, name):
    model = make(name, data).to("cuda")
    users = np.array([3, 1, 2])
    rows = dense_rows(model.input_matrix(data), users).to("cuda")
    if model.trainable:
        model.train()
        model.loss(rows, users).backward()
    model.eval()
    scores = model.scores(rows, users)
    assert scores.device.type == "cuda" and scores.shape == (3, N_ITEMS)
