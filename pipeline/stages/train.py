"""The train stage: one (split, model, seed) run from params to a finished run folder."""

from __future__ import annotations

from pathlib import Path

from pipeline.data.dataset import load_interactions
from pipeline.plan import grid_key, grid_points, is_tuned, twin_runs
from pipeline.training.fitting import fit, load_clusters, load_hyperbolic
from pipeline.training.reuse import copy_run_as, reuse_selected_run
from pipeline.training.selection import read_selected


def main(params: dict, split: str, model_name: str, seed: int, data_dir: str, out_dir: str, clusters_dir: str | None = None,
         tuned_path: str | None = None, hyperbolic_dir: str | None = None, *, tag: str | None = None,
         timing_path: Path | None = None, reuse_tuned_run: bool = True) -> dict:
    """One run; ``tuned_path``: the tune stage's selected.json, required for variants with a grid;
    ``hyperbolic_dir``: the embed stage's HGCF folder, required for HDRM.

    ``reuse_tuned_run``: the seed the grid was trained with copies the tune stage's run of the
    selected setting, and another seed copies another variant's run of that seed when the selected
    setting is that variant's (:func:`pipeline.plan.twin_runs`; the train stage); off, the run is
    trained (the verify stage), and ``tag`` / ``timing_path`` keep its log lines and timing apart
    from the train stage's."""
    data = load_interactions(data_dir)
    clusters = load_clusters(params, model_name, clusters_dir, data.n_items)
    hyperbolic = load_hyperbolic(params, model_name, hyperbolic_dir, data.n_users, data.n_items)
    tuned = None
    tag = tag or f"{split} {model_name} seed {seed}"
    timing_path = timing_path or Path("logs") / "timing" / f"{split}_{model_name}_seed{seed}.json"
    if is_tuned(params, model_name, split):
        if not tuned_path:
            raise ValueError(f"model variant {model_name!r} is tuned on a grid on {split}: pass --tuned runs/{split}/{model_name}/tuning/selected.json")
        tuned = read_selected(tuned_path)
        reused = reuse_selected_run(tuned_path, split, model_name, seed, out_dir, timing_path) if reuse_tuned_run else None
        if reused is not None:
            print(f"[{tag}] the tune stage's run of the selected setting {tuned} (same seed): copied, not retrained", flush=True)
            return reused
        points = grid_points(params, model_name, split)
        twin = next((run for i, run in twin_runs(params, split, model_name, int(seed)).items() if points[i] == tuned), None)
        if twin is not None and reuse_tuned_run:
            reused = copy_run_as(params, twin, model_name, out_dir, timing_path, needed_by=f"{model_name} seed {seed}")
            print(f"[{tag}] the selected setting {tuned} is {twin.model}'s on {split}: its seed-{seed} run copied, not retrained",
                  flush=True)
            return reused
    elif tuned_path:
        raise ValueError(f"--tuned given, but model variant {model_name!r} has no grid on {split} ({grid_key(params, model_name, split)})")
    _, metrics = fit(params, split, model_name, seed, data, out_dir, tag, timing_path, clusters, tuned, hyperbolic)
    k = params["training"]["select_metric"]
    ndcg = k.replace("recall", "ndcg")
    print(
        f"[{tag}] best epoch {metrics['best_epoch']}: valid {k} {metrics['valid'][k]:.4f}; "
        f"test {k} {metrics['test'][k]:.4f}, {ndcg} {metrics['test'].get(ndcg, float('nan')):.4f}",
        flush=True,
    )
    return metrics
