"""Runs that are copies of runs already made, instead of trainings that give the same bytes.

Two cases, both with the same config and seed as the copied run, so the same bytes:

* :func:`reuse_selected_run`: the train stage's run of a tuned variant with the seed its grid was
  trained with is the selected grid point's run (``runs/<split>/<variant>/tuning/point<i>/``);
* :func:`copy_run_as`: a run of another variant with an equal setting on the same split and seed
  (:func:`pipeline.plan.twin_runs`): a grid point of the tune stage (e.g. TV-Diff's grid holds
  the release's final configuration, which ``tvdiff-final`` runs as given), or a later seed's
  train run when the tune stage selects that point. ``metrics.json`` and ``model.pt`` are
  rewritten to name the variant they stand for (:func:`renamed_state`), as its training would
  have written them.

Every file is written atomically, ``metrics.json`` last (a run counts as finished once it is
there), and the copied run's timing record becomes the copy's.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from pipeline.config import evaluation_config
from pipeline.io import atomic_path, read_json, write_json
from pipeline.plan import RUN_DIR, RUN_FILES, Run
from pipeline.training.checkpoint import load_checkpoint, save_checkpoint
from pipeline.training.fitting import run_training
from pipeline.training.trainer import run_fingerprint, stored_identity

TIMING_DIR = Path("logs") / "timing"


def _copy_timing(source: Path, timing_path: Path) -> None:
    if source.exists():
        timing_path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(timing_path) as tmp:
            shutil.copyfile(source, tmp)


def reuse_selected_run(selected_path: str | Path, split: str, variant: str, seed: int, out_dir: str | Path, timing_path: Path) -> dict | None:
    """For the seed the grid was trained with, copy the selected point's run folder to ``out_dir``
    and return its metrics; None for any other seed."""
    selected = read_json(selected_path)
    if int(selected["seed"]) != int(seed) or (selected["split"], selected["variant"]) != (split, variant):
        return None
    point = Path(selected_path).parent / f"point{selected['point']}"
    if read_json(point / "hyper.json") != selected["hyper"] or not all((point / f).exists() for f in RUN_FILES):
        raise FileNotFoundError(f"{point}: the selected grid run is incomplete; run the tune stage again")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name in RUN_FILES:
        with atomic_path(out / name) as tmp:
            shutil.copyfile(point / name, tmp)
    _copy_timing(TIMING_DIR / f"{split}_{variant}_tune_point{selected['point']}.json", timing_path)
    return read_json(out / "metrics.json")


def renamed_state(state: dict, params: dict, source: Run, variant: str) -> dict:
    """The model.pt state of ``source``'s run as the training of ``variant`` (same split, seed
    and setting) writes it: the same weights, optimizer, config and epoch; the identity and the
    fingerprint of ``variant`` (as :func:`pipeline.training.fitting.fit` makes them: the identity
    with the seed as a number, the variant's training settings, the evaluation)."""
    identity = {"model": variant, "split": source.split, "seed": source.seed, "config": state["config"]}
    if "hyperbolic" in state["identity"]:
        identity["hyperbolic"] = state["identity"]["hyperbolic"]
    fp = run_fingerprint(identity, run_training(params, source.split, variant), evaluation_config(params))
    return {**state, "fingerprint": fp, "identity": stored_identity(identity)}


def copy_run_as(params: dict, source: Run, variant: str, run_dir: str | Path, timing_path: Path, needed_by: str) -> dict:
    """Copy ``source`` (another variant's run with this run's setting and seed) into ``run_dir``
    as ``variant``'s run: metrics.json and model.pt name ``variant`` (:func:`renamed_state`), the
    source's timing record becomes ``timing_path``. Returns the copy's metrics. ``needed_by`` (the
    run the copy stands for) names it in the error when the source is not there yet."""
    folder = Path(RUN_DIR.format(**source._asdict()))
    missing = [name for name in RUN_FILES if not (folder / name).exists()]
    if missing:
        raise FileNotFoundError(f"{folder}: {', '.join(missing)} missing; train {source.model} seed {source.seed} on "
                                f"{source.split} first ({needed_by} is that run)")
    out = Path(run_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name in RUN_FILES:
        if name not in ("metrics.json", "model.pt"):
            with atomic_path(out / name) as tmp:
                shutil.copyfile(folder / name, tmp)
    state = load_checkpoint(folder / "model.pt", made_by="train")
    save_checkpoint(out / "model.pt", renamed_state(state, params, source, variant))
    _copy_timing(TIMING_DIR / f"{source.split}_{source.model}_seed{source.seed}.json", timing_path)
    metrics = {**read_json(folder / "metrics.json"), "model": variant}
    write_json(out / "metrics.json", metrics)  # last: the run counts as finished once it is there
    return metrics
