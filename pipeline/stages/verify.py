"""The verify stage: retrain committed runs and say how far the new ones are from them.

``python -m pipeline verify --run runs/<split>/<model>/seed<N> [--run ...] --work verify/<label>``

Each run is trained again from scratch, with the same params, inputs and seed, into
``<work>/<split>/<model>/seed<N>`` (a tuned variant trains its selected setting: the tune stage's
copy of its seed-1 run is not reused here). Then its ``metrics.json`` and ``history.csv`` are
compared with the committed ones: byte-equal, or per metric the largest absolute difference over
the evaluated epochs and at the selected epoch, and whether the selected (best) epoch moved.
``<work>/report.json`` keeps every figure; the printed lines are built from it. A killed
retraining resumes from its checkpoint; a finished one is trained again unless ``--reuse``.

The inputs (prepared split, clusters, the tune stage's ``selected.json``, HDRM's stage-1 points)
must exist; ``--inputs`` prints their paths for the DAG runner to build (``make verify`` does).
"""

from __future__ import annotations

import csv
import json
import os
import platform
import re
from pathlib import Path

from pipeline import plan
from pipeline.io import write_json

RUN_PATTERN = re.compile(r"(?:^|/)runs/(?P<split>[^/]+)/(?P<model>[^/]+)/seed(?P<seed>\d+)/?$")


def parse_run(path: str) -> tuple[str, str, int]:
    m = RUN_PATTERN.search(Path(path).as_posix())
    if m is None:
        raise ValueError(f"{path}: not a run folder (runs/<split>/<model>/seed<N>)")
    return m["split"], m["model"], int(m["seed"])


def run_inputs(params: dict, split: str, model: str) -> dict[str, str | None]:
    """The files a (split, model) run reads besides params: what the train stage's command passes
    (:mod:`pipeline.plan`)."""
    clusters = plan.clusters_of(params, split, model)
    return {
        "data": f"data/prepared/{split}",
        "clusters": clusters[0] if clusters else None,
        "tuned": f"{plan.TUNE_DIR.format(split=split, model=model)}/selected.json" if plan.is_tuned(params, model, split) else None,
        "hyperbolic": plan.stage1_of(params, split, model),
    }


def input_targets(params: dict, runs: list[str]) -> list[str]:
    """Files the DAG runner must build before :func:`main` can retrain ``runs``."""
    targets = []
    for run in runs:
        split, model, seed = parse_run(run)
        targets += plan.train_inputs(params, plan.Run(split, model, seed))
    return list(dict.fromkeys(targets))


def retrain(params: dict, split: str, model: str, seed: int, out: Path) -> None:
    """The train stage's run, with the train stage's inputs, into ``out`` (never a copy)."""
    from pipeline.stages.train import main as train

    inputs = run_inputs(params, split, model)
    train(params, split, model, seed, inputs["data"], out, inputs["clusters"], inputs["tuned"], inputs["hyperbolic"],
          tag=f"verify {split} {model} seed {seed}", timing_path=out / "timing.json", reuse_tuned_run=False)


def _history(path: Path) -> dict[int, dict[str, float]]:
    with open(path) as fh:
        return {int(row["epoch"]): {k: float(v) for k, v in row.items() if k != "epoch" and v != ""}
                for row in csv.DictReader(fh)}


def compare(committed: Path, new: Path) -> dict:
    """Differences between two run folders' metrics.json and history.csv."""
    old_m, new_m = (json.loads((d / "metrics.json").read_text()) for d in (committed, new))
    report = {
        "metrics_json_identical": (committed / "metrics.json").read_bytes() == (new / "metrics.json").read_bytes(),
        "history_csv_identical": (committed / "history.csv").read_bytes() == (new / "history.csv").read_bytes(),
        "best_epoch": [old_m["best_epoch"], new_m["best_epoch"]],
        "epochs_trained": [old_m["epochs_trained"], new_m["epochs_trained"]],
        "at_best": {},  # split/metric -> |new - committed| of the selected epoch's values
        "over_history": {},  # column -> largest |new - committed| over epochs both evaluated
    }
    for part in ("valid", "test"):
        for name, value in old_m[part].items():
            report["at_best"][f"{part}_{name}"] = abs(new_m[part][name] - value)
    old_h, new_h = _history(committed / "history.csv"), _history(new / "history.csv")
    for epoch in sorted(old_h.keys() & new_h.keys()):
        for column, value in old_h[epoch].items():
            if column in new_h[epoch]:
                diff = abs(new_h[epoch][column] - value)
                report["over_history"][column] = max(report["over_history"].get(column, 0.0), diff)
    return report


def summary_line(run: str, report: dict) -> str:
    if report["metrics_json_identical"] and report["history_csv_identical"]:
        return f"{run}: byte-identical (metrics.json, history.csv)"
    (old_best, new_best), at_best = report["best_epoch"], report["at_best"]
    moved = "unchanged" if old_best == new_best else f"MOVED {old_best} -> {new_best}"
    worst_metric = max(at_best, key=at_best.get)
    evaluated = {k: v for k, v in report["over_history"].items() if k != "loss"}
    worst_epoch_metric = max(evaluated, key=evaluated.get) if evaluated else None
    parts = [
        f"{run}: differs; best epoch {moved}",
        f"test recall@20 {at_best['test_recall@20']:.2e}, ndcg@20 {at_best['test_ndcg@20']:.2e}",
        f"largest at best epoch {at_best[worst_metric]:.2e} ({worst_metric})",
    ]
    if worst_epoch_metric is not None:
        parts.append(f"largest over shared epochs {evaluated[worst_epoch_metric]:.2e} ({worst_epoch_metric})")
    if "loss" in report["over_history"]:
        parts.append(f"loss {report['over_history']['loss']:.2e}")
    return "; ".join(parts)


def _cpu_name() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), platform.processor())


def kernels() -> dict:
    """What decides the float results besides the code: the CPU and the kernels torch picks."""
    import torch

    return {
        "cpu": _cpu_name(),
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "ONEDNN_MAX_CPU_ISA": os.environ.get("ONEDNN_MAX_CPU_ISA", ""),
        "ATEN_CPU_CAPABILITY": os.environ.get("ATEN_CPU_CAPABILITY", ""),
    }


def main(params: dict, runs: list[str], work: str, reuse: bool = False) -> dict:
    """``reuse``: compare a retraining that already finished in ``work`` instead of training
    again (after a code change it is stale: leave it off)."""
    work_dir = Path(work)
    report = {"kernels": kernels(), "runs": {}}
    print(f"[verify] {len(runs)} run(s); kernels: {report['kernels']}", flush=True)
    for run in runs:
        split, model, seed = parse_run(run)
        committed = Path(run)
        if not (committed / "metrics.json").is_file():
            raise FileNotFoundError(f"{committed}/metrics.json: no committed run to compare with")
        out = work_dir / split / model / f"seed{seed}"
        if not (reuse and (out / "metrics.json").is_file()):  # a killed retraining resumes from its checkpoint
            retrain(params, split, model, seed, out)
        report["runs"][run] = compare(committed, out)
        print(f"[verify] {summary_line(run, report['runs'][run])}", flush=True)
    write_json(work_dir / "report.json", report)
    return report
