"""L-DiffRec / LT-DiffRec: latent sizes, item order of the scores, annealing, resume state,
training on planted data, the training loop end to end, temporal input, parameter counts."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.config import ConfigError, EvaluationConfig, TrainingConfig, model_config
from pipeline.data.dataset import load_interactions, temporal_weights
from planted import write_planted
from pipeline.models import MODELS
from pipeline.models.diffrec import DiffRec, DiffRecConfig
from pipeline.models.ldiffrec import LDiffRec, LDiffRecConfig, LTDiffRec, LTDiffRecConfig, latent_sizes
from pipeline.training.fitting import build_model
from pipeline.training.trainer import RESUME_FILE, train_run

# a tiny L-DiffRec (2 clusters); the other hyperparameters are LDiffRecConfig's defaults.
# temporal is explicit: LT-DiffRec's config would default it to true
HYPER = dict(lr_ae=1e-2, lr_denoiser=5e-3, batch_size=16, epochs=10, latent_size=16, emb_size=4, dims=[16], steps=5,
             noise_scale=0.1, noise_min=0.01, noise_max=0.1, temporal=False)


def config(cls=LDiffRecConfig, **overrides) -> LDiffRecConfig:
    cfg = cls(**{**HYPER, **overrides})
    assert cfg.problems() == []
    return cfg


def scattered_clusters(n_items: int, seed: int = 0, n_clusters: int = 2) -> np.ndarray:
    """Cluster ids that interleave the items (so cluster order != item order)."""
    rng = np.random.default_rng(seed)
    ids = np.arange(n_items) % n_clusters
    rng.shuffle(ids)
    return ids.astype(np.int64)


# --------------------------------------------------------------------------------------------
# latent sizes and construction


def test_latent_sizes_sum_and_proportional():
    # ML-1M-like: 1500/2810*300 = 160.14, 1310/2810*300 = 139.86 -> 160 + 140 (the authors' split too)
    assert latent_sizes([1500, 1310], 300) == [160, 140]
    cases = [([1500, 1310], 300), ([7, 5, 3], 16), ([10, 10, 10], 10), ([1, 1000], 300), ([3, 3, 2], 5), ([99, 1], 4)]
    for sizes, total in cases:
        got = latent_sizes(sizes, total)
        assert sum(got) == total and min(got) >= 1, (sizes, got)
        exact = np.array(sizes) * total / sum(sizes)
        if (exact >= 1).all():  # no minimum-one correction: within one unit of proportional
            assert np.all(np.abs(np.array(got) - exact) < 1), (sizes, got)
        assert got == latent_sizes(sizes, total)  # deterministic
    assert latent_sizes([10, 10, 10], 10) == [4, 3, 3]  # ties: lower id first
    assert latent_sizes([1, 1000], 300) == [1, 299]  # the tiny cluster still gets one unit
    assert latent_sizes([3, 3, 2], 5) == [2, 2, 1]  # remainders 0.875, 0.875, 0.25

    model = LDiffRec(config(latent_size=16), 10, 15, clusters=np.array([0] * 9 + [1] * 6))
    assert model.latent_dims == [10, 6] and model.cluster_sizes == [9, 6]  # 9.6 -> 10, 6.4 -> 6
    assert [enc.weight.shape for enc in model.encoders] == [(20, 9), (12, 6)]
    assert model.decoder.weight.shape == (15, 16)
    # denoiser: latent+emb -> dims -> latent
    assert model.denoiser.in_layers[0].weight.shape == (16, 16 + 4)
    assert model.denoiser.out_layers[-1].weight.shape == (16, 16)


def test_bad_clusters_are_refused():
    cfg = config()
    with pytest.raises(ValueError, match="needs clusters"):
        LDiffRec(cfg, 10, 6)
    with pytest.raises(ValueError, match="one id per item"):
        LDiffRec(cfg, 10, 6, clusters=np.array([0, 1, 0, 1]))
    with pytest.raises(ValueError, match="every id 0..1"):
        LDiffRec(cfg, 10, 6, clusters=np.array([0, 1, 2, 0, 1, 2]))  # 3 ids, n_clusters 2
    with pytest.raises(ValueError, match="every id 0..1"):
        LDiffRec(cfg, 10, 6, clusters=np.array([0, 2, 0, 2, 0, 2]))  # id 1 missing
    with pytest.raises(ValueError, match="integer"):
        LDiffRec(cfg, 10, 6, clusters=np.array([0.0, 1.0] * 3))


def test_config_problems_and_temporal_flag():
    assert dict(LDiffRecConfig(**{**HYPER, "lr_ae": 0.0}).problems())["lr_ae"].startswith("must be > 0")
    assert ("latent_size", "n_clusters") in dict(LDiffRecConfig(**{**HYPER, "latent_size": 1}).problems())
    assert "temporal" in dict(LDiffRecConfig(**{**HYPER, "temporal": True}).problems())
    assert "temporal" in dict(LTDiffRecConfig(**HYPER).problems())
    assert LTDiffRecConfig(**{**HYPER, "temporal": True}).problems() == []
    bad_w = LTDiffRecConfig(**{**HYPER, "temporal": True, "w_min": 0.9, "w_max": 0.5})
    assert ("w_min", "w_max") in dict(bad_w.problems())
    assert LDiffRecConfig(**{**HYPER, "w_min": 0.9, "w_max": 0.5}).problems() == []  # unused without temporal
    # through params.yaml: the key is named
    params = {"models": {"ltdiffrec": {"defaults": dict(HYPER)}}}
    with pytest.raises(ConfigError, match=r"models\.ltdiffrec\.defaults\.temporal"):
        model_config(params, "ltdiffrec", "tiny")
    params["models"]["ltdiffrec"]["per_split"] = {"tiny": {"temporal": True}}
    assert isinstance(model_config(params, "ltdiffrec", "tiny"), LTDiffRecConfig)
    assert MODELS["ldiffrec"] is LDiffRec and MODELS["ltdiffrec"] is LTDiffRec
    assert (LDiffRec.display_name, LTDiffRec.display_name) == ("L-DiffRec", "LT-DiffRec")
    # the model class's own check applies whatever config class is passed
    with pytest.raises(ValueError, match="temporal"):
        LTDiffRec(LDiffRecConfig(**HYPER), 10, 6, clusters=np.array([0, 1] * 3))


# --------------------------------------------------------------------------------------------
# item order


def trained_model(n_users=30, n_items=23, steps=5, seed=0, **overrides) -> tuple[LDiffRec, torch.Tensor]:
    torch.manual_seed(seed)
    model = LDiffRec(config(steps=steps, **overrides), n_users, n_items, clusters=scattered_clusters(n_items, seed))
    rows = (torch.rand(n_users, n_items) < 0.3).float()
    opt = model.optimizer()
    model.train()
    for _ in range(5):  # not just the initialisation (zero biases)
        opt.zero_grad()
        model.loss(rows).backward()
        opt.step()
    model.eval()
    return model, rows


def test_scores_equal_slow_per_item_reference():
    """Encoder c reads exactly cluster c's original items; score column j is original item j."""
    model, rows = trained_model()
    clusters = scattered_clusters(23, 0)
    scores = model.scores(rows)
    assert scores.shape == (30, 23)
    with torch.no_grad():
        for u in range(0, rows.shape[0], 3):
            x = rows[u].numpy().astype(np.float64)
            mus = []
            for c, enc in enumerate(model.encoders):
                items = [j for j in range(23) if clusters[j] == c]  # ascending original ids
                h = np.tanh(enc.weight.double().numpy() @ x[items] + enc.bias.double().numpy())
                mus.append(h[: model.latent_dims[c]])
            mu = torch.from_numpy(np.concatenate(mus)).float()[None]
            z = model.diffusion.reverse(model.denoiser, mu, 0)[0].double().numpy()
            for j in range(23):
                ref = float(model.decoder.weight[j].double().numpy() @ z + float(model.decoder.bias[j]))
                assert abs(float(scores[u, j]) - ref) < 1e-4, (u, j)


def test_planted_model_ranks_the_original_item_first():
    """A row holding only original item a makes original item b the top score."""
    n_items = 12
    clusters = np.array([1, 0, 1, 1, 0, 0, 1, 0, 1, 0, 0, 1])  # item 7 is cluster 0's 4th item
    model = LDiffRec(config(latent_size=8, noise_scale=0.0), 4, n_items, clusters=clusters)
    a, b = 7, 2
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        # encoder 0 reads cluster 0's items in ascending id: [1, 4, 5, 7, 9, 10] -> item 7 is column 3
        assert model.item_order[:6].tolist() == [1, 4, 5, 7, 9, 10]
        model.encoders[0].weight[0, 3] = 3.0  # mu_0 = tanh(3 x_a)
        # denoiser (noise_scale 0: the reverse process is the denoiser applied T times):
        # out = W2 tanh(W1 [x, emb]) with W1 reading mu_0 and W2 writing it back, a fixed point near 1
        model.denoiser.in_layers[0].weight[0, 0] = 3.0
        model.denoiser.out_layers[-1].weight[0, 0] = 1.0
        model.decoder.weight[b, 0] = 5.0
        model.decoder.bias.copy_(torch.linspace(0.0, 1.0, n_items))  # without item a, item 11 wins
    model.eval()
    rows = torch.zeros(2, n_items)
    rows[0, a] = 1.0
    rows[1, (a + 1) % n_items] = 1.0
    scores = model.scores(rows)
    assert int(scores[0].argmax()) == b
    assert int(scores[1].argmax()) == n_items - 1
    # the training reconstruction uses the same order: the NLL of item b is lowest for row 0
    with torch.no_grad():
        mu, _ = model.encode(rows)
        assert mu[0, 0] > 0.99 and mu[1].abs().max() == 0


# --------------------------------------------------------------------------------------------
# annealing and resume


def test_annealing_schedules():
    # 45 users, batch 16 -> 3 batches per epoch
    model = LDiffRec(config(lamda=0.03, lamda_floor=0.005, lamda_anneal_epochs=10, kl_weight_max=0.3, kl_anneal_batches=20), 45, 6, clusters=np.array([0, 1] * 3))
    assert model.batches_per_epoch == 3
    lam = lambda b: model.annealing(b)[0]  # noqa: E731
    kl = lambda b: model.annealing(b)[1]  # noqa: E731
    assert lam(0) == lam(2) == pytest.approx(0.03)  # epoch 1: no anneal yet
    assert lam(3) == pytest.approx(0.027)  # one epoch done: 0.03 * (1 - 1/10)
    assert lam(15) == pytest.approx(0.015)
    assert lam(27) == pytest.approx(0.005) and lam(10_000) == pytest.approx(0.005)  # the floor
    assert kl(0) == 0.0 and kl(3) == pytest.approx(3 / 20) and kl(5) == pytest.approx(0.25) and kl(6) == pytest.approx(0.3) and kl(500) == pytest.approx(0.3)
    no_anneal = LDiffRec(config(lamda_anneal_epochs=0, kl_anneal_batches=0), 45, 6, clusters=np.array([0, 1] * 3))
    assert no_anneal.annealing(0) == (pytest.approx(0.03), pytest.approx(0.3))


def test_resume_state_round_trip():
    torch.manual_seed(0)
    n_users, n_items = 40, 20
    clusters = scattered_clusters(n_items)
    model = LDiffRec(config(steps=3, history_num_per_term=2), n_users, n_items, clusters=clusters)
    opt = model.optimizer()
    rows = (torch.rand(n_users, n_items) < 0.3).float()
    model.train()
    for _ in range(7):
        opt.zero_grad()
        model.loss(rows[:16]).backward()
        opt.step()
    assert int(model.batches_seen) == 7
    assert model.diffusion.loss_count.tolist() == [2, 2, 2]  # importance sampling is active
    state = {k: v.clone() for k, v in model.state_dict().items()}
    assert {"batches_seen", "item_order", "diffusion.loss_history", "diffusion.loss_count"} <= set(state)
    opt_state = copy.deepcopy(opt.state_dict())  # a checkpoint is a copy, not live references

    torch.manual_seed(123)  # another seed: other initial weights
    resumed = LDiffRec(config(steps=3, history_num_per_term=2), n_users, n_items, clusters=clusters)
    assert int(resumed.batches_seen) == 0
    resumed.load_state_dict(state)
    resumed_opt = resumed.optimizer()
    resumed_opt.load_state_dict(opt_state)
    assert int(resumed.batches_seen) == 7
    assert torch.equal(resumed.diffusion.loss_history, model.diffusion.loss_history)
    assert torch.equal(resumed.diffusion.loss_count, model.diffusion.loss_count)
    assert resumed.annealing(int(resumed.batches_seen)) == model.annealing(int(model.batches_seen))

    resumed.train()
    losses = {}
    for name, m, o in (("original", model, opt), ("resumed", resumed, resumed_opt)):
        torch.manual_seed(5)
        out = []
        for _ in range(3):
            o.zero_grad()
            loss = m.loss(rows[16:32])
            loss.backward()
            o.step()
            out.append(loss.item())
        losses[name] = out
    assert losses["original"] == losses["resumed"]
    for (k, v), (k2, v2) in zip(model.state_dict().items(), resumed.state_dict().items()):
        assert k == k2 and torch.equal(v, v2), k
    # eval-mode losses do not advance the counter
    model.eval()
    model.loss(rows[:4])
    assert int(model.batches_seen) == 10


def planted_rows(n_users: int, n_items: int, groups: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    block = n_items // groups
    x = torch.zeros(n_users, n_items)
    for u in range(n_users):
        k = u % groups
        x[u, k * block : (k + 1) * block] = (torch.rand(block, generator=g) < 0.7).float()
    return x


def test_loss_finite_and_decreasing_with_two_clusters():
    x = planted_rows(24, 30, 3)
    torch.manual_seed(0)
    model = LDiffRec(config(), 24, 30, clusters=scattered_clusters(30))
    opt = model.optimizer()
    assert isinstance(opt, torch.optim.AdamW)
    ae = {id(p) for p in [*model.encoders.parameters(), *model.decoder.parameters()]}
    den = {id(p) for p in model.denoiser.parameters()}
    groups = opt.param_groups
    assert [g["lr"] for g in groups] == [HYPER["lr_ae"], HYPER["lr_denoiser"]]
    assert {id(p) for p in groups[0]["params"]} == ae and {id(p) for p in groups[1]["params"]} == den
    assert ae | den == {id(p) for p in model.parameters()}
    model.train()
    losses = []
    for _ in range(50):
        opt.zero_grad()
        loss = model.loss(x)
        assert loss.dim() == 0 and torch.isfinite(loss)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5])
    assert int(model.batches_seen) == 50
    assert model.diffusion.loss_count.tolist() == [10] * 5
    # the planted groups: each user's own block scores above the other blocks
    model.eval()
    scores = model.scores(x)
    block = 10
    own = torch.stack([scores[u, (u % 3) * block : (u % 3 + 1) * block].mean() for u in range(24)])
    rest = torch.stack([torch.cat([scores[u, : (u % 3) * block], scores[u, (u % 3 + 1) * block :]]).mean() for u in range(24)])
    assert (own > rest).float().mean() > 0.9


# --------------------------------------------------------------------------------------------
# parameter counts (ML-1M shapes)


def test_parameter_count_below_diffrec_for_ml1m_shapes():
    n_items = 2810
    clusters = np.array([0] * 1500 + [1] * 1310)
    ml1m = config(latent_size=300, dims=[300], emb_size=10, steps=40, noise_scale=0.005, noise_min=0.005, noise_max=0.02)
    ldiffrec = LDiffRec(ml1m, 5949, n_items, clusters=clusters)
    assert ldiffrec.latent_dims == [160, 140]
    encoders = 1500 * 320 + 320 + 1310 * 280 + 280
    decoder = 300 * n_items + n_items
    denoiser = (10 * 10 + 10) + (310 * 300 + 300) + (300 * 300 + 300)
    assert ldiffrec.n_parameters() == encoders + decoder + denoiser == 1_876_920
    diffrec_cfg = DiffRecConfig(epochs=1)  # the ML-1M clean setting
    diffrec = DiffRec(diffrec_cfg, 5949, n_items)
    assert diffrec.n_parameters() == 3_622_320
    assert ldiffrec.n_parameters() < diffrec.n_parameters()


# --------------------------------------------------------------------------------------------
# the training loop end to end, and LT-DiffRec's input


N_USERS, N_ITEMS, GROUPS = 60, 40, 3
SPLIT = "tiny_clean"
TRAINING = TrainingConfig(device="cpu", threads=1, eval_every=2, patience=4, select_metric="recall@10", checkpoint_every=2)
EVALUATION = EvaluationConfig(topk=(10, 20), batch_size=25)
OUTPUTS = ("metrics.json", "history.csv", "per_user.parquet", "model.pt")
RUN_HYPER = dict(HYPER, lr_ae=2e-2, lr_denoiser=1e-2, epochs=12)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """60 users in 3 groups, each with its own block of 13 items plus one random item;
    per user, in time order: 6 train, 2 valid, 2 test interactions."""
    folder = tmp_path_factory.mktemp("tiny_ldiffrec")
    write_planted(folder, N_USERS, N_ITEMS, GROUPS)
    return load_interactions(folder)


def params_for(name: str = "ldiffrec", **overrides) -> dict:
    return {"models": {name: {"defaults": {**RUN_HYPER, **overrides}}}, "training": {"threads": TRAINING.threads}}


def run(data, run_dir: Path, seed: int = 1, name: str = "ldiffrec", stop_after_epoch: int | None = None, **overrides):
    model = build_model(params_for(name, **overrides), name, SPLIT, seed, data.n_users, data.n_items, clusters=scattered_clusters(N_ITEMS))
    identity = {"model": name, "split": SPLIT, "seed": seed, "config": dataclasses.asdict(model.config)}
    return train_run(model, data, TRAINING, EVALUATION, run_dir, identity, seed, stop_after_epoch=stop_after_epoch)


def outputs(run_dir: Path) -> dict[str, bytes]:
    return {name: (run_dir / name).read_bytes() for name in OUTPUTS}


def test_train_run_learns_and_is_deterministic(data, tmp_path):
    metrics = run(data, tmp_path / "a")
    # chance: 2 test items among ~32 unseen candidates -> recall@20 about 20/32 = 0.6 (recall@10 about 0.3)
    assert metrics["test"]["recall@20"] > 0.85
    assert metrics["test"]["recall@10"] > 0.5
    again = run(data, tmp_path / "b")
    assert again == metrics
    assert outputs(tmp_path / "a") == outputs(tmp_path / "b")
    # killed after epoch 4 and resumed: the same bytes (batch counter and loss history in the checkpoint)
    assert run(data, tmp_path / "killed", stop_after_epoch=4) == {}
    assert (tmp_path / "killed" / RESUME_FILE).is_file()
    assert run(data, tmp_path / "killed") == metrics
    assert outputs(tmp_path / "killed") == outputs(tmp_path / "a")


def test_ltdiffrec_input_rows_are_temporal_weights(data, tmp_path):
    model = build_model(params_for("ltdiffrec", temporal=True, w_min=0.2, w_max=0.9), "ltdiffrec", SPLIT, 1, N_USERS, N_ITEMS, clusters=scattered_clusters(N_ITEMS))
    assert isinstance(model, LTDiffRec) and model.display_name == "LT-DiffRec"
    matrix = model.input_matrix(data)
    expected = temporal_weights(data.train_rank, 0.2, 0.9)
    assert (matrix != expected).nnz == 0
    assert set(np.round(matrix.data, 6)) - {0.2, 0.9} and matrix.data.min() == pytest.approx(0.2) and matrix.data.max() == pytest.approx(0.9)
    plain = build_model(params_for(), "ldiffrec", SPLIT, 1, N_USERS, N_ITEMS, clusters=scattered_clusters(N_ITEMS))
    assert plain.input_matrix(data) is data.train
    metrics = run(data, tmp_path / "lt", name="ltdiffrec", temporal=True, w_min=0.2, w_max=0.9, epochs=4)
    assert metrics["model"] == "ltdiffrec" and np.isfinite(metrics["test"]["recall@20"])
