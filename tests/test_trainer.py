"""The training loop on a tiny planted dataset: outputs, determinism, resume, checkpoints, divergence."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from pipeline.config import EvaluationConfig, TrainingConfig
from pipeline.data.dataset import dense_rows, load_interactions
from planted import write_planted
from pipeline.evaluation.evaluator import Evaluator
from pipeline.models.diffrec import DiffRecConfig
from pipeline.training.checkpoint import CheckpointMismatch, CorruptCheckpoint, fingerprint, load_checkpoint, save_checkpoint
from pipeline.training.fitting import build_model
from pipeline.training.trainer import BEST_FILE, CORRUPT_SUFFIX, RESUME_FILE, TrainingDiverged, format_duration, set_determinism, train_run
from pipeline.training import trainer as trainer_module

N_USERS, N_ITEMS, GROUPS = 60, 40, 3
SPLIT = "tiny_clean"
TRAINING = TrainingConfig(
    device="cpu", threads=1, eval_every=2, patience=4, select_metric="recall@10", checkpoint_every=2
)
EVALUATION = EvaluationConfig(topk=(5, 10), batch_size=25)
OUTPUTS = ("metrics.json", "history.csv", "per_user.parquet", "model.pt")

# a tiny DiffRec; the other hyperparameters are DiffRecConfig's defaults
HYPER = dict(lr=2e-2, batch_size=16, epochs=10, dims=[16], emb_size=4, steps=5, noise_scale=0.1, noise_min=0.01, noise_max=0.1)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """60 users in 3 groups; each group interacts with its own block of 13 items (plus one random item).

    Per user, in time order: 6 train, 2 valid, 2 test interactions.
    """
    folder = tmp_path_factory.mktemp("tiny_clean")
    write_planted(folder, N_USERS, N_ITEMS, GROUPS)
    loaded = load_interactions(folder)
    assert loaded.valid.nnz == loaded.test.nnz == 2 * N_USERS
    return loaded


def params_for(**overrides) -> dict:
    """The parts of params.yaml that build_model reads."""
    return {"models": {"diffrec": {"defaults": {**HYPER, **overrides}}}, "training": {"threads": TRAINING.threads}}


def run(data, run_dir: Path, seed: int = 1, stop_after_epoch: int | None = None, training=TRAINING, **overrides):
    model = build_model(params_for(**overrides), "diffrec", SPLIT, seed, data.n_users, data.n_items)
    identity = {"model": "diffrec", "split": SPLIT, "seed": seed, "config": dataclasses.asdict(model.config)}
    return train_run(model, data, training, EVALUATION, run_dir, identity, seed, stop_after_epoch=stop_after_epoch)


def outputs(run_dir: Path) -> dict[str, bytes]:
    return {name: (run_dir / name).read_bytes() for name in OUTPUTS}


@pytest.fixture(scope="module")
def reference_run(data, tmp_path_factory):
    """One uninterrupted run (seed 1), shared by the tests that compare against it."""
    run_dir = tmp_path_factory.mktemp("reference")
    metrics = run(data, run_dir)
    return run_dir, metrics


# --------------------------------------------------------------------------------------------


def test_run_writes_outputs(data, reference_run):
    run_dir, metrics = reference_run
    for name in (*OUTPUTS, "timing.json"):
        assert (run_dir / name).is_file(), name
    assert not (run_dir / RESUME_FILE).exists()  # removed once the run is finished
    assert json.loads((run_dir / "timing.json").read_text())["threads"] == TRAINING.threads  # the run's own

    assert json.loads((run_dir / "metrics.json").read_text()) == metrics
    assert (metrics["model"], metrics["split"], metrics["seed"]) == ("diffrec", SPLIT, 1)
    assert metrics["best_epoch"] % TRAINING.eval_every == 0
    assert metrics["best_epoch"] <= metrics["epochs_trained"] <= HYPER["epochs"]
    names = {f"{m}@{k}" for m in ("recall", "ndcg", "precision", "mrr") for k in EVALUATION.topk}
    assert set(metrics["valid"]) == set(metrics["test"]) == names
    # the planted groups are learnable: far above chance (2 relevant of ~30 candidates -> recall@10 ~ 1/3)
    assert metrics["valid"]["recall@10"] > 0.5

    history = pl.read_csv(run_dir / "history.csv")
    assert history.columns[:2] == ["epoch", "loss"]
    assert history["epoch"].to_list() == list(range(1, metrics["epochs_trained"] + 1))
    evaluated = history.filter(pl.col("valid_recall@10").is_not_null())["epoch"].to_list()
    assert evaluated == list(range(2, metrics["epochs_trained"] + 1, 2))
    best = history.filter(pl.col("epoch") == metrics["best_epoch"]).row(0, named=True)
    for split in ("valid", "test"):
        for name, value in metrics[split].items():
            assert best[f"{split}_{name}"] == pytest.approx(value, abs=1e-7)
    # the best epoch has the highest validation recall@10 (the first one on ties)
    assert max(history["valid_recall@10"].drop_nulls()) == pytest.approx(metrics["valid"]["recall@10"], abs=1e-7)

    per_user = pl.read_parquet(run_dir / "per_user.parquet")
    assert per_user.height == 2 * N_USERS
    for split in ("valid", "test"):
        part = per_user.filter(pl.col("split") == split).sort("user")
        assert part["user"].to_list() == list(range(N_USERS))
        for name, value in metrics[split].items():
            assert float(np.sum(part[name].to_numpy()) / N_USERS) == value  # exact: the same arithmetic


def test_model_pt_holds_the_best_state(data, reference_run):
    run_dir, metrics = reference_run
    saved = torch.load(run_dir / "model.pt", weights_only=True)
    assert {"model", "optimizer", "config", "epoch"} <= set(saved)
    assert saved["epoch"] == metrics["best_epoch"]
    assert saved["config"] == dataclasses.asdict(DiffRecConfig(**HYPER))
    assert (saved["n_users"], saved["n_items"]) == (N_USERS, N_ITEMS)
    # reloading the best state reproduces the reported metrics exactly
    model = build_model(params_for(), "diffrec", SPLIT, 99, data.n_users, data.n_items)
    model.load_state_dict(saved["model"])
    model.eval()
    result = Evaluator(data, EVALUATION.topk, EVALUATION.batch_size).evaluate(
        lambda users: model.scores(dense_rows(data.train, users), users)
    )
    assert result.means["valid"] == metrics["valid"]
    assert result.means["test"] == metrics["test"]


def test_load_checkpoint_refuses_other_fingerprint(reference_run):
    run_dir, _ = reference_run
    path = run_dir / "model.pt"
    saved = load_checkpoint(path)
    assert load_checkpoint(path, saved["fingerprint"])["epoch"] == saved["epoch"]
    other = fingerprint({"model": "diffrec", "split": SPLIT, "seed": 2})
    with pytest.raises(CheckpointMismatch, match="another configuration"):
        load_checkpoint(path, other)


def test_same_seed_same_bytes(data, reference_run, tmp_path):
    run_dir, metrics = reference_run
    again = run(data, tmp_path / "again")
    assert again == metrics
    assert outputs(tmp_path / "again") == outputs(run_dir)
    # a different seed gives a different run (the comparison above is not vacuous)
    run(data, tmp_path / "seed2", seed=2)
    assert (tmp_path / "seed2" / "history.csv").read_bytes() != (run_dir / "history.csv").read_bytes()


def test_early_stopping(data, tmp_path, capsys):
    # this configuration peaks at epoch 6 and then stops: 10 - 6 >= patience, checked before epoch 10
    metrics = run(data, tmp_path / "early", **EARLY)
    assert metrics["best_epoch"] == 6
    assert metrics["epochs_trained"] == metrics["best_epoch"] + TRAINING.patience - 1 < HYPER["epochs"]
    assert "early stop before epoch 10" in capsys.readouterr().out


EARLY = dict(lr=3e-2, dropout=0.2)  # a configuration that stops early (see test_early_stopping)


@pytest.mark.parametrize("overrides", [{}, EARLY], ids=["full", "early-stop"])
def test_resume_after_kill_matches_uninterrupted(data, reference_run, tmp_path, capsys, overrides):
    if overrides:
        run_dir = tmp_path / "uninterrupted"
        metrics = run(data, run_dir, **overrides)
    else:
        run_dir, metrics = reference_run
    assert metrics["best_epoch"] > 4  # the best state is found after the resume point
    killed = tmp_path / "killed"
    assert run(data, killed, stop_after_epoch=4, **overrides) == {}
    assert (killed / RESUME_FILE).is_file()
    assert not (killed / "metrics.json").exists()
    assert load_checkpoint(killed / RESUME_FILE)["epoch"] == 4
    capsys.readouterr()

    resumed = run(data, killed, **overrides)  # a fresh process: model rebuilt with the same seed
    log = capsys.readouterr().out
    assert "resumed from" in log and "after epoch 4" in log
    assert "epoch    1 " not in log and "epoch    5 " in log  # epochs 1-4 were not trained again
    assert resumed == metrics
    assert outputs(killed) == outputs(run_dir)
    assert sorted(p.name for p in killed.iterdir()) == sorted([*OUTPUTS, "timing.json"])  # no resume.pt, no best file


def killed_at_epoch_4(data, folder: Path) -> Path:
    """A run killed after epoch 4's checkpoint; the best state it records is in its best file."""
    assert run(data, folder, stop_after_epoch=4) == {}
    best = load_checkpoint(folder / RESUME_FILE)["run"]["best_epoch"]
    assert [p.name for p in folder.glob("best-epoch*.pt")] == [BEST_FILE.format(epoch=best)]
    return folder / BEST_FILE.format(epoch=best)


def test_a_resume_checkpoint_that_holds_the_best_state_is_migrated(data, reference_run, tmp_path):
    """A resume.pt written before best files (the best weights and optimizer state inside its run
    state) resumes to the same outputs: its best state becomes the best file."""
    target = tmp_path / "legacy"
    best = killed_at_epoch_4(data, target)
    saved, kept = load_checkpoint(target / RESUME_FILE), load_checkpoint(best)
    saved["run"].update(best_model=kept["model"], best_optimizer=kept["optimizer"])
    save_checkpoint(target / RESUME_FILE, saved)
    best.unlink()
    run_dir, metrics = reference_run
    assert run(data, target) == metrics
    assert outputs(target) == outputs(run_dir)


def test_a_missing_best_file_stops_the_resume_with_what_to_do(data, tmp_path):
    target = tmp_path / "lost"
    killed_at_epoch_4(data, target).unlink()
    with pytest.raises(FileNotFoundError, match=f"records its best state in .*best-epoch.*, which is missing; delete .*{RESUME_FILE} to train the run afresh"):
        run(data, target)


def test_a_slow_run_checkpoints_between_checkpoint_every(data, reference_run, tmp_path, monkeypatch):
    """A checkpoint is also due when CHECKPOINT_SECONDS have passed, at any epoch's end (3 here,
    where checkpoint_every = 2 alone would not save), and resuming from it changes nothing."""
    run_dir, metrics = reference_run
    killed = tmp_path / "killed"
    with monkeypatch.context() as patch:
        patch.setattr(trainer_module, "CHECKPOINT_SECONDS", 0.0)
        assert run(data, killed, stop_after_epoch=3) == {}
    assert load_checkpoint(killed / RESUME_FILE)["epoch"] == 3
    assert run(data, killed) == metrics
    assert outputs(killed) == outputs(run_dir)


def test_resume_file_of_another_config_is_ignored(data, tmp_path, capsys):
    target = tmp_path / "other"
    assert run(data, target, stop_after_epoch=4, lr=1e-3) == {}  # leaves a resume.pt of lr=1e-3
    capsys.readouterr()
    fresh = run(data, target, lr=2e-3)
    log = capsys.readouterr().out
    assert "starting afresh" in log and "resumed from" not in log
    uninterrupted = run(data, tmp_path / "clean", lr=2e-3)
    assert fresh == uninterrupted
    assert outputs(target) == outputs(tmp_path / "clean")


def test_corrupt_resume_file_is_moved_aside_and_the_run_starts_afresh(data, reference_run, tmp_path, capsys):
    target = tmp_path / "corrupt"
    assert run(data, target, stop_after_epoch=4) == {}
    resume = target / RESUME_FILE
    resume.write_bytes(resume.read_bytes()[: resume.stat().st_size // 2])  # e.g. the disk filled up mid-copy
    capsys.readouterr()
    metrics = run(data, target)  # would fail on every rerun if the file were trusted
    err = capsys.readouterr().err
    aside = target / (RESUME_FILE + CORRUPT_SUFFIX)
    assert err.startswith(f"[train] warning: {resume} is not a readable checkpoint (")
    assert err.endswith(f"; moved it aside to {aside} and starting afresh\n")
    assert aside.is_file() and not resume.exists()
    run_dir, reference = reference_run
    assert metrics == reference and outputs(target) == outputs(run_dir)
    # a damaged checkpoint read as an input names the stage that makes it
    with pytest.raises(CorruptCheckpoint, match=re.escape(f"{aside} is not a readable checkpoint (")) as info:
        load_checkpoint(aside, made_by="train")
    assert str(info.value).endswith("; it is made by the `train` stage: delete it and rerun train")


def test_epoch_line_projects_the_remaining_time(data, tmp_path, capsys):
    assert (format_duration(37.4), format_duration(245), format_duration(3 * 3600 + 12 * 60 + 40)) == ("37s", "4m05s", "3h12m")
    run(data, tmp_path / "eta", stop_after_epoch=2)
    lines = [line for line in capsys.readouterr().out.splitlines() if "] epoch " in line]
    cap = HYPER["epochs"]
    # before the first evaluation only the cap bounds the run; after it (a best at epoch 2),
    # patience stops it after epoch 2 + patience - 1 unless a new best comes
    assert re.search(rf"\] epoch    1 .*  eta <= \d+s \(cap: epoch {cap}\)$", lines[0]), lines[0]
    assert re.search(
        rf"\] epoch    2 .*\*best\*  eta <= \d+s \(cap: epoch {cap}\), \d+s if no new best "
        rf"\(stops after epoch {2 + TRAINING.patience - 1}\)$",
        lines[1],
    ), lines[1]
    assert len(lines) == 2


def test_nan_loss_raises_with_epoch(data, tmp_path):
    model = build_model(params_for(), "diffrec", SPLIT, 1, data.n_users, data.n_items)
    identity = {"model": "diffrec", "split": SPLIT, "seed": 1, "config": dataclasses.asdict(model.config)}
    batches_per_epoch = -(-N_USERS // HYPER["batch_size"])  # 4
    calls = {"n": 0}
    real_loss = model.loss

    def loss(rows, users=None):
        calls["n"] += 1
        value = real_loss(rows, users)
        if calls["n"] > 2 * batches_per_epoch + 1:  # epoch 3, batch 1
            return value * float("nan")
        return value

    model.loss = loss
    with pytest.raises(TrainingDiverged, match=r"epoch 3, batch 1"):
        train_run(model, data, TRAINING, EVALUATION, tmp_path / "nan", identity, 1)
    assert not (tmp_path / "nan" / "metrics.json").exists()


def test_huge_lr_diverges(data, tmp_path):
    with pytest.raises(TrainingDiverged, match=r"at epoch \d+, batch \d+"):
        run(data, tmp_path / "huge", lr=1e30)



@pytest.mark.parametrize("name", ["diffrec", "multivae"])
def test_default_batches_are_the_old_user_loop(data, tmp_path, name):
    """The contract's default ``batches`` is the trainer's former loop: the same batches and the same
    RNG consumption; and train_run's per-batch losses equal those of a copy of the former loop (the
    evaluations in between draw nothing from the RNG)."""
    hyper = {"batch_size": 16, "epochs": 2, **({"dims": [16]} if name == "diffrec" else {})}
    params = {"models": {name: {"defaults": hyper}}, "training": {"threads": 1}}
    model = build_model(params, name, SPLIT, 1, data.n_users, data.n_items)
    matrix = model.input_matrix(data)
    torch.manual_seed(4)
    new = list(model.batches(matrix))
    new_rng = torch.get_rng_state()
    torch.manual_seed(4)
    order = torch.randperm(data.n_users).numpy()  # the former loop's batches
    old = [(dense_rows(matrix, order[s : s + 16]), order[s : s + 16]) for s in range(0, data.n_users, 16)]
    assert torch.equal(torch.get_rng_state(), new_rng)
    assert len(new) == len(old) == 4
    for (rows, users), (old_rows, old_users) in zip(new, old):
        assert torch.equal(rows, old_rows) and np.array_equal(users, old_users)

    losses = []
    real = model.loss

    def recording(rows, users):
        value = real(rows, users)
        losses.append(value.detach().clone())
        return value

    model.loss = recording
    identity = {"model": name, "split": SPLIT, "seed": 1, "config": dataclasses.asdict(model.config)}
    training = dataclasses.replace(TRAINING, eval_every=1, checkpoint_every=1)
    train_run(model, data, training, EVALUATION, tmp_path / "run", identity, 1)

    again = build_model(params, name, SPLIT, 1, data.n_users, data.n_items)
    set_determinism(1, TRAINING.threads)
    optimizer = again.optimizer()
    old_losses = []
    for _epoch in range(2):  # the trainer's former loop, verbatim (less the evaluations)
        again.train()
        order = torch.randperm(data.n_users).numpy()
        for start in range(0, data.n_users, 16):
            users = order[start : start + 16]
            rows = dense_rows(matrix, users)
            optimizer.zero_grad()
            loss = again.loss(rows, users)
            loss.backward()
            optimizer.step()
            old_losses.append(loss.detach().clone())
    assert len(losses) == 8
    assert torch.equal(torch.stack(losses), torch.stack(old_losses))


def test_means_and_per_user_rows_are_over_the_users_with_a_ground_truth(data, tmp_path):
    """Users without test items (here the first 5) are left out of the test means and of the
    test rows of per_user.parquet; the validation side still has every user."""
    test = data.test.tolil()
    test[:5] = 0
    test = test.tocsr()
    test.eliminate_zeros()
    fewer = dataclasses.replace(data, test=test)
    metrics = run(fewer, tmp_path, epochs=2)
    per_user = pl.read_parquet(tmp_path / "per_user.parquet")
    for split, users in (("valid", list(range(N_USERS))), ("test", list(range(5, N_USERS)))):
        part = per_user.filter(pl.col("split") == split).sort("user")
        assert part["user"].to_list() == users
        for name, value in metrics[split].items():
            assert float(np.sum(part[name].to_numpy()) / len(users)) == value  # exact: the same arithmetic
