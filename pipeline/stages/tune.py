"""The tune stage: a tuned model variant's hyperparameter grid, selected on validation.

For a variant with ``models.<variant>.grid`` (the baselines), every grid point (the product of
the listed values, or of each listed sub-grid's: :func:`pipeline.plan.grid_points`; on top of
the defaults and the split's overrides) is trained with ``--seed``,
the first seed the plan runs the variant with on the split (:func:`pipeline.plan.tune_runs`),
through the shared trainer, exactly like any run: the same
evaluator, early stopping and best-epoch selection. The point with the highest validation
``training.select_metric`` wins (the first one listed on ties: the grid's order is part of the
config). The paper tuned its baselines the same way; test metrics play no part in the choice.

Outputs of ``runs/<split>/<variant>/tuning/``:

* ``point<i>/``: each point's run folder (metrics.json, history.csv, per_user.parquet and
  ``hyper.json``, the point's setting); model.pt is kept for the selected point only;
* ``grid.csv``: one row per point: its setting (empty where its sub-grid leaves a hyperparameter
  at the variant's value), best epoch, validation and test metric;
* ``selected.json``: the winning point, its setting and its validation value; the train stage
  (``python -m pipeline train --tuned .../selected.json``) then runs every seed with it; the
  first seed's run is the selected point's run (the same config and seed, so the same bytes),
  which it copies instead of training it a second time.

A grid point whose run another variant of the plan trains anyway (the same split, seed and
setting, that variant untuned there: :func:`pipeline.plan.shared_points`; e.g. TV-Diff's grid
holds the release's final configuration, which ``tvdiff-final`` runs as given) is not trained a
second time: the stage reads that run (an input of the job in both engines) and copies it into
``point<i>/``, its ``metrics.json`` naming this variant (``pipeline.training.reuse.copy_run_as``).

A killed tune stage loses nothing. The grid is trained in a work folder beside the output,
``runs/<split>/<variant>/tuning.partial/`` (:func:`work_folder`), which neither engine declares,
and renamed to ``tuning/`` once ``grid.csv`` and ``selected.json`` are written: Snakemake and DVC
delete a job's declared output before they run it again, and the work folder survives that, as a
training run's ``resume.pt`` beside its declared files does. Run again (``make reproduce``, ``dvc
repro`` or the stage's own command), the stage keeps the finished points (metrics.json present and
hyper.json equal to the point) and resumes the interrupted one from its own checkpoint; a
finished ``tuning/`` that the stage's own command is given again is moved back to the work
folder first, so its points are kept the same way. That holds only for points made by the same
job: the stage records what its points depend on (its code files, the params keys it reads other
than the grid, its input files, the runs it copies, the seed: :func:`grid_identity`) in
``logs/tune/<split>/<variant>.grid-identity`` and starts the grid over when the work folder was
made under another record, or under none, so a rerun after a change of code, params or data
trains every point anew.

Before each point it trains, the stage prints ``grid point i/n`` and, once a point has been
trained, the projected time for the points left (mean time of the points trained so far x points
left; an estimate: each point stops early or at its epoch cap on its own).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

import polars as pl

from pipeline.config import ConfigError, split_overrides
from pipeline.plan import (PACKAGE_DIR, PREPARED, RUN_DIR, Run, grid_key, grid_keys, grid_points, job_code, model_params,
                           param_value, shared_points)
from pipeline.data.dataset import load_interactions
from pipeline.io import atomic_path, read_json, write_json
from pipeline.training.fitting import fit, load_clusters
from pipeline.training.reuse import copy_run_as
from pipeline.training.selection import SELECTED_FILE, select
from pipeline.training.trainer import format_duration

IDENTITY_DIR = Path("logs") / "tune"  # beside the stage's log: outside the folder DVC tracks


def recorded_seconds(timing: Path) -> list[float]:
    """[train + evaluation seconds] of a finished point from its timing record, [] without a
    readable one (the ETA then rests on the other points)."""
    try:
        record = read_json(timing)
        return [float(record["train_seconds_total"]) + float(record["eval_seconds_total"])]
    except (OSError, ValueError, KeyError, TypeError):
        return []


def grid_identity(params: dict, split: str, variant: str, seed: int, data_dir: str, clusters_dir: str | None,
                  shared: dict[int, Run]) -> str:
    """sha256 of what the grid's points depend on besides their own setting: the code the tune job
    runs (:func:`pipeline.plan.job_code`), the params keys it reads (:func:`pipeline.plan.model_params`)
    but the grid (:func:`pipeline.plan.grid_key`), the bytes of its input files (the prepared split,
    the clusters), the runs copied as points (``shared``: :func:`pipeline.plan.shared_points`) and
    the seed."""
    h = hashlib.sha256()
    files = [(name, PACKAGE_DIR.parent / name) for name in job_code(params, "tune", variant)]
    files += [(Path(p).name, Path(data_dir) / Path(p).name) for p in PREPARED]
    embeddings = params["models"][variant].get("embeddings")
    if clusters_dir is not None and embeddings is not None:
        files.append(("clusters.parquet", Path(clusters_dir) / embeddings / "clusters.parquet"))
    for name, path in files:
        h.update(f"{name}\0{hashlib.sha256(path.read_bytes()).hexdigest()}\0".encode())
    for key in model_params(params, split, variant):
        if key == grid_key(params, variant, split):
            continue  # each point is matched to its own setting (hyper.json)
        value = split_overrides(params, variant, split) if key == f"models.{variant}.per_split.{split}" else param_value(params, key)
        h.update(f"{key}\0{json.dumps(value, sort_keys=True, default=str)}\0".encode())
    for i, source in sorted(shared.items()):
        metrics = Path(RUN_DIR.format(**source._asdict())) / "metrics.json"
        h.update(f"point{i}\0{hashlib.sha256(metrics.read_bytes()).hexdigest() if metrics.exists() else ''}\0".encode())
    h.update(f"seed\0{int(seed)}".encode())
    return h.hexdigest()


def work_folder(out: Path) -> Path:
    """The folder the grid is trained in: ``<out>.partial`` beside the declared output ``out``,
    renamed to ``out`` when the grid is complete (the module docstring)."""
    return out.with_name(out.name + ".partial")


def main(params: dict, split: str, variant: str, seed: int, data_dir: str, out_dir: str, clusters_dir: str | None = None) -> dict:
    points = grid_points(params, variant, split)
    if not points:
        raise ConfigError(grid_key(params, variant, split), f"{variant} has no grid to tune on {split} (add "
                          f"models.{variant}.grid, or models.{variant}.per_split.{split}.grid)")
    out = Path(out_dir)
    work = work_folder(out)
    data = load_interactions(data_dir)
    clusters = load_clusters(params, variant, clusters_dir, data.n_items)
    seed = int(seed)
    shared = shared_points(params, split, variant)
    identity = grid_identity(params, split, variant, seed, data_dir, clusters_dir, shared)
    record = IDENTITY_DIR / split / f"{variant}.grid-identity"
    if out.is_dir() and not work.exists():  # a finished grid given again: its points are kept as a killed grid's
        out.rename(work)
    if work.is_dir() and any(work.iterdir()) and (not record.is_file() or record.read_text() != identity):
        print(f"[{split} {variant}] {work} holds a grid made with other code, params or inputs, or by an"
              " unknown run: starting it over", flush=True)
        shutil.rmtree(work)
    with atomic_path(record) as tmp:
        Path(tmp).write_text(identity)
    metric = params["training"]["select_metric"]
    results = []
    # wall time of each point trained by this process, or for a kept point the train and
    # evaluation seconds its timing record holds (a resumed grid's ETA)
    point_seconds = []
    for i, point in enumerate(points):
        run_dir = work / f"point{i}"
        tag = f"{split} {variant} grid {i + 1}/{len(points)} {point}"
        hyper_path = run_dir / "hyper.json"
        timing = Path("logs") / "timing" / f"{split}_{variant}_tune_point{i}.json"
        finished = (run_dir / "metrics.json").exists() and hyper_path.exists() and read_json(hyper_path) == point
        if finished:
            print(f"[{tag}] already finished: kept", flush=True)
            results.append(read_json(run_dir / "metrics.json"))
            point_seconds += recorded_seconds(timing)
            continue
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "metrics.json").unlink(missing_ok=True)  # a stale result of another setting
        write_json(hyper_path, point)
        if i in shared:
            source = shared[i]
            metrics = copy_run_as(params, source, variant, run_dir, timing, needed_by="this grid point")
            print(f"[{tag}] the same run as {source.model} seed {source.seed} on {split} (same setting): copied, not"
                  f" trained; valid {metric} {metrics['valid'][metric]:.4f}", flush=True)
            results.append(metrics)
            continue
        left = len(points) - i
        if point_seconds:
            mean = sum(point_seconds) / len(point_seconds)
            eta = f"eta ~{format_duration(mean * left)} for the {left} point(s) still to train (mean {format_duration(mean)} per point)"
        else:
            eta = "eta: known once the first point is trained"
        print(f"[{split} {variant}] grid point {i + 1}/{len(points)} {point}: {eta}", flush=True)
        start = time.perf_counter()
        _, metrics = fit(params, split, variant, seed, data, run_dir, tag, timing, clusters, tuned=point)
        point_seconds.append(time.perf_counter() - start)
        print(f"[{tag}] best epoch {metrics['best_epoch']}: valid {metric} {metrics['valid'][metric]:.4f}", flush=True)
        results.append(metrics)

    best = select(points, results, metric)
    for i in range(len(points)):
        if i != best:  # the selected point's run is the first seed's run (pipeline.stages.train.main)
            (work / f"point{i}" / "model.pt").unlink(missing_ok=True)
    keys = grid_keys(params, variant, split)  # a column per hyperparameter, empty where a sub-grid leaves it
    rows = [
        {"point": i, **{k: str(point[k]) if k in point else None for k in keys}, "best_epoch": r["best_epoch"],
         f"valid_{metric}": r["valid"][metric], f"test_{metric}": r["test"][metric], "selected": i == best}
        for i, (point, r) in enumerate(zip(points, results))
    ]
    with atomic_path(work / "grid.csv") as tmp:
        pl.DataFrame(rows).write_csv(tmp)
    selected = {"variant": variant, "split": split, "seed": seed, "select_metric": metric, "point": best,
                "hyper": points[best], "valid": results[best]["valid"][metric], "n_points": len(points)}
    write_json(work / SELECTED_FILE, selected)
    if out.exists():  # an older output the engines did not delete (the stage run by hand)
        shutil.rmtree(out)
    work.rename(out)  # the declared output appears whole, or not at all
    print(f"[{split} {variant}] selected grid point {best}: {points[best]} (valid {metric} {selected['valid']:.4f})", flush=True)
    return selected
