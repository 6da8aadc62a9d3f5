"""The model contract (``pipeline/models/base.py``), checked on every registered model.

Each model is built with the hyperparameters params.yaml gives its first variant on ML-1M clean,
on the planted dataset of ``planted.py`` (3 user groups, each using its own block of items), with
made-up side inputs where it needs them (clusters: items dealt round-robin; hyperbolic: points of the
hyperboloid placed near their group's centre, as a trained stage 1 would place them). A model added under ``pipeline/models/`` is checked here without
editing this file.
"""

from __future__ import annotations

import copy
import dataclasses
import io
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.config import load_params, model_config
from pipeline.data.dataset import dense_rows, load_interactions
from pipeline.models import MODELS
from pipeline.models.base import FAMILIES, SIDE_INPUTS, Recommender
from pipeline.training.checkpoint import canonical
from pipeline.training.trainer import for_saving, set_determinism
from planted import write_planted

ROOT = Path(__file__).resolve().parents[1]
PARAMS = load_params(ROOT / "params.yaml")
SPLIT = "ml-1m_clean"
N_USERS, N_ITEMS, GROUPS = 60, 39, 3
STEPS = 100  # full-batch optimizer steps of the learning check


def variant_of(key: str) -> str:
    """The first params.yaml variant whose class is ``key``."""
    return next(v for v, block in PARAMS["models"].items() if block.get("class", v) == key)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return load_interactions(write_planted(tmp_path_factory.mktemp("planted"), N_USERS, N_ITEMS, GROUPS))


def side_inputs(cls, config, data, seed: int = 0) -> dict:
    side = {"data": data}
    if "clusters" in cls.requires:
        side["clusters"] = np.arange(data.n_items) % config.n_clusters
    if "hyperbolic" in cls.requires:
        # stage-1 points as a trained stage 1 gives them: a user near its group's items
        rng = np.random.default_rng(seed)
        centres = rng.normal(size=(GROUPS, 16))

        def points(groups: np.ndarray) -> np.ndarray:
            v = 0.5 * centres[groups % GROUPS] + rng.normal(scale=0.2, size=(len(groups), 16))
            r = np.linalg.norm(v, axis=1, keepdims=True)
            return np.hstack([np.cosh(r), np.sinh(r) * v / r])

        users, items = np.arange(data.n_users), np.arange(data.n_items)
        side["hyperbolic"] = (points(users % GROUPS), points(items // (N_ITEMS // GROUPS)))
    return side


def build(key: str, data, seed: int = 1) -> Recommender:
    cls = MODELS[key]
    config = model_config(PARAMS, variant_of(key), SPLIT)
    set_determinism(seed, 1)
    return cls(config, data.n_users, data.n_items, **side_inputs(cls, config, data))


def batch(model: Recommender, data) -> tuple[torch.Tensor, np.ndarray]:
    users = np.arange(data.n_users)
    return dense_rows(model.input_matrix(data), users), users


@pytest.mark.parametrize("key", sorted(MODELS))
def test_declares_the_contract(key):
    cls = MODELS[key]
    assert issubclass(cls, Recommender) and cls.key == key and Recommender.registry[key] is cls
    assert dataclasses.is_dataclass(cls.Config) and callable(cls.Config.problems)
    assert isinstance(cls.display_name, str) and cls.display_name
    assert cls.family in FAMILIES and set(cls.requires) <= set(SIDE_INPUTS)
    assert callable(getattr(cls, "scores", None))
    if cls.trainable:
        assert cls.loss is not Recommender.loss and cls.optimizer is not Recommender.optimizer
    assert any(block.get("class", v) == key for v, block in PARAMS["models"].items()), f"no params.yaml block uses {key}"


def test_registration_refuses_a_taken_name_and_a_missing_declaration():
    with pytest.raises(TypeError, match="is taken"):
        class Again(Recommender, key="diffrec"):
            Config, display_name, family = MODELS["diffrec"].Config, "x", "diffusion"
    with pytest.raises(TypeError, match=r"does not declare \['family'\]"):
        class NoFamily(Recommender, key="no-family"):
            Config, display_name = MODELS["diffrec"].Config, "x"
    with pytest.raises(TypeError, match=r"trainable = True\) does not define \['loss', 'optimizer'\]"):
        class NoLoss(Recommender, key="no-loss"):
            Config, display_name, family = MODELS["diffrec"].Config, "x", "classic"

            def scores(self, rows, users):
                return rows
    assert "no-family" not in Recommender.registry and "no-loss" not in Recommender.registry


@pytest.mark.parametrize("key", ["ease", "hgcf", "lightgcn", "mf", "mostpop", "tvdiff"])  # those built from it
def test_a_model_built_from_the_train_part_refuses_none_and_another_size(key, data):
    cls = MODELS[key]
    config = model_config(PARAMS, variant_of(key), SPLIT)
    side = {k: v for k, v in side_inputs(cls, config, data).items() if k != "data"}
    with pytest.raises(ValueError, match=rf"^{re.escape(cls.display_name)} needs the .*: pass data=InteractionData"):
        cls(config, data.n_users, data.n_items, **side)
    with pytest.raises(ValueError, match=rf"^{re.escape(cls.display_name)}: data has {data.n_users} users x {data.n_items} "
                                         rf"items, but the model was asked for {data.n_users} x {data.n_items + 1}$"):
        cls(config, data.n_users, data.n_items + 1, data=data, **side)


@pytest.mark.parametrize("key", sorted(MODELS))
def test_scores_shape_and_determinism_at_evaluation(key, data):
    model = build(key, data).eval()
    rows, users = batch(model, data)
    torch.manual_seed(10)
    first = model.scores(rows, users)
    assert first.shape == (data.n_users, data.n_items) and first.dtype == torch.float32
    assert torch.isfinite(first).all()
    torch.manual_seed(10)
    assert torch.equal(model.scores(rows, users), first), "the same state and RNG must give the same scores"
    if not model.samples_when_scoring:
        torch.manual_seed(11)  # another RNG state: dropout is off, nothing is drawn
        assert torch.equal(model.scores(rows, users), first), "eval-mode scores depend on the RNG"


@pytest.mark.parametrize("key", sorted(MODELS))
def test_state_dict_round_trip(key, data):
    model = build(key, data, seed=1).eval()
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    other = build(key, data, seed=2).eval()
    other.load_state_dict(torch.load(buffer, weights_only=True))
    rows, users = batch(model, data)
    torch.manual_seed(3)
    expected = model.scores(rows, users)
    torch.manual_seed(3)
    assert torch.equal(other.scores(rows, users), expected)
    assert other.n_parameters() == model.n_parameters() == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("key", sorted(MODELS))
def test_the_best_state_file_has_the_bytes_of_a_copy(key, data):
    """The trainer writes the best state from the live weights and optimizer state
    (``for_saving``: no copy of a tensor that fills its own storage); the file is the one a copy of
    every tensor and a deep copy of the optimizer state give, byte for byte (as model.pt was
    written before), after an optimizer step so that the optimizer has state."""
    model = build(key, data)
    optimizer = model.optimizer() if model.trainable else None
    if optimizer is not None:
        rows, users = batch(model, data)
        torch.manual_seed(0)
        model.train()
        optimizer.zero_grad()
        model.loss(rows, users).backward()
        optimizer.step()

    def saved(state: dict) -> bytes:
        buffer = io.BytesIO()
        torch.save(canonical(state), buffer)
        return buffer.getvalue()

    live = {"model": for_saving(model.state_dict()), "optimizer": optimizer.state_dict() if optimizer else {}}
    copied = {"model": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
              "optimizer": copy.deepcopy(optimizer.state_dict()) if optimizer else {}}
    assert saved(live) == saved(copied)


def test_for_saving_copies_views_and_shared_storage():
    base = torch.arange(12.0)
    state = {"whole": base, "again": base, "view": base[2:6], "strided": torch.zeros(3, 4).t()}
    out = for_saving(state)
    assert out["whole"] is not None and out["whole"].untyped_storage().data_ptr() == base.untyped_storage().data_ptr()
    for name in ("again", "view", "strided"):  # each now fills a storage of its own
        assert out[name].untyped_storage().data_ptr() != base.untyped_storage().data_ptr()
        assert out[name].untyped_storage().nbytes() == out[name].numel() * 4 and torch.equal(out[name], state[name])


def in_group_share(scores: torch.Tensor, k: int = 5) -> float:
    """Share of each user's top-k items that lie in the user's planted item block (chance: 1/3)."""
    block = N_ITEMS // GROUPS
    top = scores.topk(k, dim=1).indices.numpy()
    group = (np.arange(N_USERS) % GROUPS)[:, None]
    return float(((top // block) == group).mean())


@pytest.mark.parametrize("key", sorted(k for k in MODELS if MODELS[k].trainable))
def test_learns_the_planted_structure(key, data):
    """After full-batch steps on the train rows, the training loss has fallen and each user's top
    items come mostly from its own group's block."""
    model = build(key, data)
    optimizer = model.optimizer()
    rows, users = batch(model, data)
    torch.manual_seed(0)
    losses = []
    for _ in range(STEPS):
        model.train()
        optimizer.zero_grad()
        loss = model.loss(rows, users)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert np.mean(losses[-10:]) < np.mean(losses[:10])
    model.eval()
    with torch.no_grad():
        assert in_group_share(model.scores(rows, users)) > 0.6


def batch_variants():
    """Every trainable model with its params.yaml config, TV-Diff's bpr form with each batching,
    and the released user-uniform triples of HGCF and HDRM."""
    out = [(k, {}) for k in sorted(MODELS) if MODELS[k].trainable]
    return out + [("tvdiff", dict(loss_type="bpr", batching="pairs")), ("tvdiff", dict(loss_type="bpr", batching="users")),
                  ("hgcf", dict(sampling="users")), ("hdrm", dict(sampling="triples"))]


@pytest.mark.parametrize("key, overrides", batch_variants(), ids=lambda v: v if isinstance(v, str) else "-".join(map(str, v.values())))
def test_an_epoch_of_batches_feeds_the_loss(key, overrides, data):
    """``batches`` (the contract's default or the model's own) yields (rows, users, *extra): dense
    rows of the input matrix for those users, together covering every user (or, for triple
    batches, rows of width 0 and the triples' positives and negatives in ``extra``, as many
    triples as train pairs, users drawn at random); ``loss(rows, users, *extra)`` of each is a
    finite scalar."""
    model = build(key, data)
    if overrides:
        model.config = dataclasses.replace(model.config, **overrides)
    matrix = model.input_matrix(data)
    model.train()
    torch.manual_seed(0)
    seen, triples = [], False
    for rows, users, *extra in model.batches(matrix):
        triples = rows.shape == (len(users), 0)
        if triples:  # (user, positive, negative) in users and extra
            positives, negatives = extra
            assert len(positives) == len(negatives) == len(users)
            dense = matrix.toarray()
            assert (dense[users, positives.numpy()] > 0).all() and (dense[users, negatives.numpy()] == 0).all()
        else:
            assert rows.dtype == torch.float32 and rows.shape == (len(users), matrix.shape[1])
            assert torch.equal(rows, dense_rows(matrix, users))
        assert len(users) <= model.config.batch_size
        loss = model.loss(rows, users, *extra)
        assert loss.dim() == 0 and torch.isfinite(loss)
        seen.append(users)
    if triples:
        assert sum(len(u) for u in seen) == (matrix > 0).sum()
    else:
        assert set(np.concatenate(seen).tolist()) >= set(np.flatnonzero(np.diff(matrix.indptr)).tolist())


@pytest.mark.parametrize("key", sorted(MODELS))
def test_declarations_read_from_the_file_equal_the_class(key):
    """Planning and validation read each model's declarations from its file without importing it
    (pipeline/models/declared.py): they must be what the imported class says."""
    import dataclasses

    from pipeline.models.declared import TRAITS, declared_models

    cls, declared = MODELS[key], declared_models()[key]
    assert {t: getattr(cls, t) for t in TRAITS} == declared.traits
    assert [f.name for f in dataclasses.fields(cls.Config)] == list(declared.fields)
    for f in dataclasses.fields(cls.Config):
        if f.name in declared.defaults:
            value = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            assert (value, type(value)) == (declared.defaults[f.name], type(declared.defaults[f.name])), f.name
