"""The training loop shared by every model: the reference DiffRec protocol.

* seeded (torch's global generator drives shuffling, timesteps, noise and dropout);
* one optimizer step per batch of the model's ``batches`` (default: shuffled mini-batches of
  user rows, made dense one batch at a time; TV-Diff's ``bpr`` form: batches of (user,
  positive) pairs, as released), so an epoch is one pass over what the model iterates over;
* evaluate valid and test every ``eval_every`` epochs; keep the state with the best validation
  ``select_metric``; stop when ``patience`` epochs pass without a new best (checked at the start
  of an epoch, as the reference does), but not before the end of epoch ``min_epochs`` where the
  model's config has one (HGCF's released rule; 0 otherwise); report the test metrics of the
  best validation epoch;
* the best state so far (weights and optimizer) is written to the run folder when it is found
  (``best-epoch<N>.pt``, the future ``model.pt`` byte for byte) instead of being kept in memory,
  so a run holds one copy of its weights and optimizer state, not two;
* a resumable checkpoint every ``checkpoint_every`` epochs (model, optimizer, RNG, best-so-far
  metrics, history; the best state's file is kept until a later checkpoint has recorded a newer
  best), and after any epoch that ends ``CHECKPOINT_SECONDS`` or more after the last one (slow
  epochs: a kill loses at most that much finished training), so a killed run restarted with the
  same configuration ends with the same metrics; a
  resume checkpoint that cannot be loaded is moved aside (``resume.pt.corrupt``) with a warning
  and the run starts afresh;
* each epoch's line ends with a projected remaining time: at most (mean epoch time so far) x
  epochs left until the ``epochs`` cap, and, once an evaluation set a best, the time until
  ``patience`` stops the run if no new best comes;
* a NaN or infinite loss stops the run with the epoch and batch named;
* a model with nothing to train (class attribute ``trainable = False``, e.g. MostPop) is
  evaluated once, reported as epoch 0, with the same outputs.

Outputs of a run folder: ``metrics.json``, ``history.csv``, ``per_user.parquet`` (per-user
valid/test metrics at the best epoch, of the users each split's means are over) and ``model.pt``
(best state). All are deterministic for a seed; wall-clock timings go to a separate
``timing.json`` (by default under ``logs/timing/``), which no engine tracks.
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from pipeline.config import EvaluationConfig, TrainingConfig
from pipeline.data.dataset import InteractionData, dense_rows
from pipeline.evaluation.evaluator import Evaluator
from pipeline.evaluation.metrics import evaluated_users
from pipeline.io import atomic_path, write_json
from pipeline.models import fast
from pipeline.training.checkpoint import CheckpointMismatch, CorruptCheckpoint, fingerprint, load_checkpoint, save_checkpoint

RESUME_FILE = "resume.pt"
BEST_FILE = "best-epoch{epoch}.pt"  # the best state so far; at the run's end linked (or copied) to model.pt, then deleted
CORRUPT_SUFFIX = ".corrupt"  # a resume checkpoint that cannot be loaded is renamed to resume.pt.corrupt
# Wall-clock bound between checkpoints besides ``checkpoint_every``: a checkpoint is taken at an
# epoch's end, whatever its number, so when checkpoints happen never changes the results.
CHECKPOINT_SECONDS = 600.0


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the message names the epoch and batch."""


@dataclass
class RunState:
    epoch: int = 0
    best_epoch: int = 0
    best_value: float = -math.inf
    best_means: dict = field(default_factory=dict)
    best_per_user: dict = field(default_factory=dict)
    history: list = field(default_factory=list)


def for_saving(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict's tensors detached and on the CPU, as a plain dict, without copying what need
    not be: a tensor that fills its own storage is saved as it is (the same bytes as a copy); a
    view, a tensor stored column-major (the fast path's first layers), or a tensor whose storage
    another entry already holds, is copied row-major, so that the file has the layout a copy of
    every tensor would give."""
    out, seen = {}, set()
    for name, tensor in state.items():
        tensor = tensor.detach().cpu()
        storage = tensor.untyped_storage()
        whole = (tensor.storage_offset() == 0 and tensor.is_contiguous()
                 and storage.nbytes() == tensor.numel() * tensor.element_size())
        out[name] = tensor if whole and storage.data_ptr() not in seen else tensor.clone(memory_format=torch.contiguous_format)
        seen.add(storage.data_ptr())
    return out


def _model_file(fp: str, weights: dict, optimizer_state: dict, config, epoch: int, data: InteractionData,
                identity: dict[str, Any]) -> dict[str, Any]:
    """What ``model.pt`` holds: the weights and optimizer state of the best epoch, and its identity."""
    return {
        "fingerprint": fp,
        "model": weights,
        "optimizer": optimizer_state,
        "config": dataclasses.asdict(config),
        "epoch": epoch,
        "n_users": data.n_users,
        "n_items": data.n_items,
        "identity": stored_identity(identity),
    }


def _moments_in_parameter_layout(optimizer: torch.optim.Optimizer) -> None:
    """Give each optimizer state tensor of a parameter's shape that parameter's memory layout.

    A checkpoint holds its tensors row-major (``checkpoint.canonical``), while the fast path keeps
    some first-layer weights column-major (``pipeline/models/fast/sparse_input.py``). torch's fused
    Adam / AdamW walk a parameter, its gradient and its moments in memory order, so moments of
    another layout than their parameter would be paired with the wrong entries (a resumed run
    would not be the uninterrupted one)."""
    for group in optimizer.param_groups:
        for param in group["params"]:
            state = optimizer.state.get(param, {})
            for key, value in state.items():
                if isinstance(value, torch.Tensor) and value.shape == param.shape and value.stride() != param.stride():
                    state[key] = torch.empty_like(param, dtype=value.dtype).copy_(value)


def _drop_best_files(run_dir: Path, keep: int | None = None) -> None:
    """Delete the best-state files of ``run_dir`` but the one of epoch ``keep`` (None: all)."""
    kept = None if keep is None else BEST_FILE.format(epoch=keep)
    for path in run_dir.glob(BEST_FILE.format(epoch="*")):
        if path.name != kept:
            path.unlink()


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("training.device is 'cuda' but no CUDA device is available; use 'cpu' or 'auto'")
    return torch.device(name)


def set_determinism(seed: int, threads: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    torch.set_num_threads(threads)
    # torch.use_deterministic_algorithms(True) sets the same flag but first imports the compiler
    # (torch._inductor, torch._dynamo: about 0.9 s of every job's start-up) for a setting of its own
    # that nothing here uses
    torch.set_deterministic_debug_mode("error")
    # deterministic mode also NaN-fills every torch.empty; our code never reads uninitialised
    # memory, and the fill cost a noticeable share of each epoch
    torch.utils.deterministic.fill_uninitialized_memory = False


def _log(tag: str, message: str) -> None:
    print(f"[{tag}] {message}", file=sys.stdout, flush=True)


def format_duration(seconds: float) -> str:
    """A duration for a person: 37s, 4m05s, 3h12m."""
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def _remaining(epoch: int, last_epoch: int, eval_every: int, train_seconds: list, eval_seconds: list) -> float:
    """Projected seconds from the end of ``epoch`` to the end of ``last_epoch``: the mean train
    time of the epochs timed so far per epoch left, plus the mean evaluation time per evaluation
    left (none before the first one is timed)."""
    evals_left = last_epoch // eval_every - epoch // eval_every
    seconds = sum(train_seconds) / len(train_seconds) * (last_epoch - epoch)
    if eval_seconds:
        seconds += sum(eval_seconds) / len(eval_seconds) * evals_left
    return seconds


def _eta(epoch: int, epochs: int, best_epoch: int, training: TrainingConfig, train_seconds: list, eval_seconds: list,
         min_epochs: int = 0) -> str:
    """The epoch line's projection: an upper bound at the ``epochs`` cap and, once an evaluation
    has set a best, the time to the patience stop if no new best comes (the run stops before
    epoch best_epoch + patience, so it trains at most to best_epoch + patience - 1, and at least
    to ``min_epochs``)."""
    text = f"eta <= {format_duration(_remaining(epoch, epochs, training.eval_every, train_seconds, eval_seconds))} (cap: epoch {epochs})"
    last_if_no_best = max(best_epoch + training.patience - 1, min_epochs)
    if best_epoch > 0 and last_if_no_best < epochs:
        seconds = _remaining(epoch, last_if_no_best, training.eval_every, train_seconds, eval_seconds)
        text += f", {format_duration(seconds)} if no new best (stops after epoch {last_if_no_best})"
    return text


def run_fingerprint(identity: dict[str, Any], training: TrainingConfig, evaluation: EvaluationConfig) -> str:
    """The fingerprint of a run's checkpoints: its identity (model, split, seed, config, and the
    stage-1 points' digest for HDRM), training settings and evaluation; the default speed-ups
    (``fast`` on) are left out, so a run is fingerprinted as before that switch existed (the
    committed model.pt files)."""
    settings = dataclasses.asdict(training)
    if settings["fast"]:
        del settings["fast"]
    return fingerprint({**identity, "training": settings, "evaluation": dataclasses.asdict(evaluation)})


def stored_identity(identity: dict[str, Any]) -> dict[str, str]:
    """The identity as model.pt stores it: every entry but the config (stored apart), as text."""
    return {k: str(v) for k, v in identity.items() if k != "config"}


def train_run(
    model: torch.nn.Module,
    data: InteractionData,
    training: TrainingConfig,
    evaluation: EvaluationConfig,
    run_dir: str | Path,
    identity: dict[str, Any],
    seed: int,
    tag: str = "train",
    stop_after_epoch: int | None = None,
    timing_path: str | Path | None = None,
) -> dict[str, Any]:
    """Train ``model`` to the end of the protocol and write the run folder.

    ``identity`` (model, split, seed, hyperparameters) is fingerprinted into every checkpoint.
    ``stop_after_epoch`` is for fault-injection tests: return right after that epoch's checkpoint.
    ``timing_path``: where wall-clock timings go (default: ``timing.json`` in ``run_dir``); kept
    out of the tracked outputs because timings differ from run to run.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    for stale in run_dir.glob(".*.tmp"):  # temporaries of writes interrupted by a kill
        stale.unlink()
    set_determinism(seed, training.threads)
    fast.set_enabled(training.fast)  # the speed-ups' one switch (pipeline/models/fast)
    device = resolve_device(training.device)
    model.to(device)
    cfg = model.config
    min_epochs = getattr(cfg, "min_epochs", 0)  # no patience stop before the end of this epoch
    trainable = model.trainable  # False: nothing to fit (MostPop), evaluated once
    optimizer = model.optimizer() if trainable else None
    matrix = model.input_matrix(data)
    evaluator = Evaluator(data, evaluation.topk, evaluation.batch_size)
    select = training.select_metric
    fp = run_fingerprint(identity, training, evaluation)
    state = RunState()
    resume_path = run_dir / RESUME_FILE
    if resume_path.exists():
        try:
            saved = load_checkpoint(resume_path, fp)
        except CheckpointMismatch as err:
            _log(tag, f"{err}; starting afresh")
            resume_path.unlink()
        except CorruptCheckpoint as err:  # e.g. truncated by a full disk: failing on every rerun helps no one
            aside = resume_path.with_name(resume_path.name + CORRUPT_SUFFIX)
            os.replace(resume_path, aside)
            print(f"[{tag}] warning: {err}; moved it aside to {aside} and starting afresh", file=sys.stderr, flush=True)
        else:
            model.load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
            _moments_in_parameter_layout(optimizer)
            torch.set_rng_state(saved["rng"])
            run = dict(saved["run"])
            legacy = {k: run.pop(k) for k in ("best_model", "best_optimizer") if k in run}  # a checkpoint of before best files
            state = RunState(**run)
            best_file = run_dir / BEST_FILE.format(epoch=state.best_epoch)
            if legacy.get("best_model") and not best_file.exists():
                save_checkpoint(best_file, _model_file(fp, legacy["best_model"], legacy["best_optimizer"], model.config,
                                                       state.best_epoch, data, identity))
            _log(tag, f"resumed from {resume_path} after epoch {state.epoch}")
            if state.best_epoch and not best_file.exists():
                raise FileNotFoundError(f"{tag}: {resume_path} records its best state in {best_file}, which is missing; "
                                        f"delete {resume_path} to train the run afresh")
    # a resumed run keeps the best file its checkpoint records (a later epoch's is made again); a fresh one keeps none
    _drop_best_files(run_dir, keep=state.best_epoch if state.best_epoch else None)

    def score(users: np.ndarray) -> torch.Tensor:
        return model.scores(dense_rows(matrix, users).to(device), users).cpu()

    if not trainable:
        return _evaluate_untrained(model, data, evaluator, score, select, run_dir, identity, fp, tag, resume_path, timing_path)

    if matrix.shape[0] != data.n_users:
        raise ValueError(f"{tag}: the input matrix has {matrix.shape[0]} rows for {data.n_users} users")
    train_seconds, eval_seconds = [], []
    start_epoch = state.epoch + 1
    last_checkpoint = time.perf_counter()
    for epoch in range(start_epoch, cfg.epochs + 1):
        if epoch > min_epochs and epoch - state.best_epoch >= training.patience:
            _log(tag, f"early stop before epoch {epoch}: no better valid {select} since epoch {state.best_epoch}")
            break
        model.train()
        t0 = time.perf_counter()
        total, batches = 0.0, 0
        for b, (rows, users, *extra) in enumerate(model.batches(matrix)):
            rows = rows.to(device)
            extra = [x.to(device) if isinstance(x, torch.Tensor) else x for x in extra]
            optimizer.zero_grad()
            loss = model.loss(rows, users, *extra)
            if not torch.isfinite(loss):
                raise TrainingDiverged(f"{tag}: loss is {loss.item()} at epoch {epoch}, batch {b}; stopping (try a lower lr)")
            loss.backward()
            optimizer.step()
            total += loss.item()
            batches += 1
        train_seconds.append(time.perf_counter() - t0)
        row: dict[str, Any] = {"epoch": epoch, "loss": total / batches}
        message = f"epoch {epoch:4d}  loss {row['loss']:.6f}  train {train_seconds[-1]:.2f}s"
        if epoch % training.eval_every == 0:
            model.eval()
            t1 = time.perf_counter()
            with model.scoring_pass():
                result = evaluator.evaluate(score)
            eval_seconds.append(time.perf_counter() - t1)
            for split, means in result.means.items():
                row.update({f"{split}_{k}": v for k, v in means.items()})
            value = result.means["valid"][select]
            improved = value > state.best_value
            message += f"  valid {select} {value:.4f}  test {select} {result.means['test'][select]:.4f}  eval {eval_seconds[-1]:.2f}s"
            if improved:
                state.best_epoch, state.best_value = epoch, value
                state.best_means = result.means
                state.best_per_user = {s: {m: torch.from_numpy(v) for m, v in d.items()} for s, d in result.per_user.items()}
                save_checkpoint(run_dir / BEST_FILE.format(epoch=epoch),
                                _model_file(fp, for_saving(model.state_dict()), optimizer.state_dict(), cfg, epoch, data, identity))
                message += "  *best*"
        message += "  " + _eta(epoch, cfg.epochs, state.best_epoch, training, train_seconds, eval_seconds, min_epochs)
        state.history.append(row)
        state.epoch = epoch
        _log(tag, message)
        overdue = time.perf_counter() - last_checkpoint >= CHECKPOINT_SECONDS
        if epoch % training.checkpoint_every == 0 or epoch == cfg.epochs or overdue:
            save_checkpoint(
                resume_path,
                {
                    "fingerprint": fp,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "rng": torch.get_rng_state(),
                    "run": dataclasses.asdict(state),
                    "config": dataclasses.asdict(cfg),
                    "epoch": epoch,
                },
            )
            last_checkpoint = time.perf_counter()
            _drop_best_files(run_dir, keep=state.best_epoch)  # the checkpoint now records this best
            if stop_after_epoch is not None and epoch >= stop_after_epoch:
                return {}
    if not state.best_epoch:
        raise RuntimeError(f"{tag}: no evaluation happened (epochs={cfg.epochs} < eval_every={training.eval_every})")
    timing_path = Path(timing_path) if timing_path else run_dir / "timing.json"
    return _write_outputs(run_dir, state, identity, fp, model, data, train_seconds, eval_seconds, resume_path, timing_path)


def _evaluate_untrained(model, data, evaluator, score, select, run_dir, identity, fp, tag, resume_path, timing_path) -> dict:
    """A model with nothing to train (``trainable = False``): one evaluation, reported as epoch 0
    (best_epoch = epochs_trained = 0, one history row without a loss), and the usual outputs."""
    model.eval()
    t0 = time.perf_counter()
    with model.scoring_pass():
        result = evaluator.evaluate(score)
    eval_seconds = [time.perf_counter() - t0]
    row: dict[str, Any] = {"epoch": 0, "loss": None}
    for split, means in result.means.items():
        row.update({f"{split}_{k}": v for k, v in means.items()})
    state = RunState(
        epoch=0,
        best_epoch=0,
        best_value=result.means["valid"][select],
        best_means=result.means,
        best_per_user={s: {m: torch.from_numpy(v) for m, v in d.items()} for s, d in result.per_user.items()},
        history=[row],
    )
    save_checkpoint(run_dir / BEST_FILE.format(epoch=0), _model_file(fp, for_saving(model.state_dict()), {}, model.config, 0, data, identity))
    _log(
        tag,
        f"nothing to train: evaluated once  valid {select} {state.best_value:.4f}  "
        f"test {select} {result.means['test'][select]:.4f}  eval {eval_seconds[0]:.2f}s",
    )
    timing_path = Path(timing_path) if timing_path else run_dir / "timing.json"
    return _write_outputs(run_dir, state, identity, fp, model, data, [], eval_seconds, resume_path, timing_path)


def _write_outputs(run_dir, state, identity, fp, model, data, train_seconds, eval_seconds, resume_path, timing_path) -> dict:
    metrics = {
        **{k: identity[k] for k in ("model", "split", "seed")},
        "best_epoch": state.best_epoch,
        "epochs_trained": state.epoch,
        "n_parameters": int(sum(p.numel() for p in model.parameters())),
        "valid": state.best_means["valid"],
        "test": state.best_means["test"],
    }
    best_file = run_dir / BEST_FILE.format(epoch=state.best_epoch)
    with atomic_path(run_dir / "model.pt") as tmp:  # the best state's file, linked (or copied) in place
        tmp.unlink()
        try:
            os.link(best_file, tmp)
        except OSError:  # a file system without hard links
            shutil.copyfile(best_file, tmp)
    columns = sorted({k for r in state.history for k in r}, key=lambda k: (k not in ("epoch", "loss"), k))
    history = pl.DataFrame([{k: r.get(k) for k in columns} for r in state.history], schema_overrides={"epoch": pl.Int32})
    with atomic_path(run_dir / "history.csv") as tmp:
        history.write_csv(tmp, float_precision=8)
    frames = []
    for split, values in state.best_per_user.items():  # the users each split's means are over
        users = evaluated_users(data.ground_truth(split))
        cols = {"user": users.astype(np.int32), "split": [split] * len(users)}
        cols.update({m: np.asarray(v, dtype=np.float64)[users] for m, v in sorted(values.items())})
        frames.append(pl.DataFrame(cols))
    with atomic_path(run_dir / "per_user.parquet") as tmp:
        pl.concat(frames).write_parquet(tmp, statistics=False)
    write_json(run_dir / "metrics.json", metrics)
    timing = {
        "threads": torch.get_num_threads(),  # this run's (set_determinism), for the tables' *threads* column
        "epochs_timed": len(train_seconds),
        "seconds_per_epoch": float(np.mean(train_seconds)) if train_seconds else None,
        "seconds_per_eval": float(np.mean(eval_seconds)) if eval_seconds else None,
        "train_seconds_total": float(np.sum(train_seconds)),
        "eval_seconds_total": float(np.sum(eval_seconds)),
    }
    write_json(timing_path, timing)
    if resume_path.exists():
        resume_path.unlink()
    _drop_best_files(run_dir)
    return metrics
