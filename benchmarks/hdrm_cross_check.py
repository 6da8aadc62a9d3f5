"""Cross-check: HDRM at its released size, both stages, on another device (a GPU), against the committed runs.

For each split (default: ML-1M clean and noisy, side by side, a process each), runs the DAG's
own three stages for seed 1 with the committed stage-1 selection (``runs/<split>/hgcf-512/tuning/
selected.json``, the tune stage's output): train hgcf-512 (stage 1: 512-d HGCF, the authors'
recipe, trained again from that setting), embed hgcf-512 (its user and item points), train
hdrm-512 (stage 2: [200, 1100], 10 epochs as released), under a copy of params.yaml with ``training.device`` set to ``--device`` and ``training.fast``
off (the speed-ups of ``pipeline/models/fast`` are CPU ones; the readable model files run on any
device). It prints, per run, the test Recall@20 / NDCG@20 beside the committed CPU run of the same
seed (``runs/<split>/<model>/seed1/metrics.json``) with the difference, the best and trained
epochs, seconds per epoch and per evaluation pass (the trainer's timing record) and each run's wall
time, and writes the same as ``summary.md`` and ``summary.json`` in ``--out`` (the stages' output
in ``<out>/<split>/stages.log``). Float rounding differs between devices, so the runs are not
bit-identical to the CPU's: the check is that they stop at the same epochs, or within a few, and
that the differences are small beside the spread of the committed seeds.

    python benchmarks/hdrm_cross_check.py --device cuda --out /tmp/hdrm-gpu [--splits ml-1m_noisy]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import time
from functools import partial
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
STAGE1, STAGE2 = "hgcf-512", "hdrm-512"
SEED = 1


def device_params(device: str, out: Path) -> Path:
    """params.yaml with the device switched and the CPU speed-ups off, written into ``out``."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["training"]["device"] = device
    params["training"]["fast"] = False
    params["training"]["threads"] = max(1, min(8, os.cpu_count() or 1))  # host-side threads (models may set their own)
    path = out / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def chain(split: str, params_path: Path, out: Path) -> list[dict]:
    """Stage 1, embed and stage 2 of one split (in a process of its own); one summary row per run.

    The stage functions are the DAG's (``pipeline/stages/train.py``, ``embed.py``); stage 1 is
    trained again from its selected setting (``reuse_tuned_run=False``, as the verify stage does)
    instead of copying the tune stage's run."""
    from pipeline.config import load_params
    from pipeline.stages import embed, train

    os.chdir(ROOT)
    params = load_params(params_path)
    data = f"data/prepared/{split}"
    tuned = f"runs/{split}/{STAGE1}/tuning/selected.json"
    work = out / split
    runs = {m: work / m / f"seed{SEED}" for m in (STAGE1, STAGE2)}
    emb = work / "embeddings" / STAGE1
    work.mkdir(parents=True, exist_ok=True)
    walls = {}
    with (work / "stages.log").open("w") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        for name, call in (
            (STAGE1, lambda: train.main(params, split, STAGE1, SEED, data, str(runs[STAGE1]), tuned_path=tuned,
                                        timing_path=work / f"{STAGE1}.timing.json", reuse_tuned_run=False)),
            ("embed", lambda: embed.main(params, split, STAGE1, data, str(runs[STAGE1]), str(emb), tuned)),
            (STAGE2, lambda: train.main(params, split, STAGE2, SEED, data, str(runs[STAGE2]), hyperbolic_dir=str(emb),
                                        timing_path=work / f"{STAGE2}.timing.json")),
        ):
            start = time.perf_counter()
            call()
            walls[name] = time.perf_counter() - start
    rows = []
    for model in (STAGE1, STAGE2):
        ours = json.loads((runs[model] / "metrics.json").read_text())
        timing = json.loads((work / f"{model}.timing.json").read_text())
        ref_path = ROOT / "runs" / split / model / f"seed{SEED}" / "metrics.json"
        ref = json.loads(ref_path.read_text()) if ref_path.exists() else None
        row = {"split": split, "model": model, "seed": SEED,
               "best_epoch": ours["best_epoch"], "epochs_trained": ours["epochs_trained"],
               "s_per_epoch": timing["seconds_per_epoch"], "s_per_eval": timing["seconds_per_eval"],
               "wall_s": walls[model]}
        for metric in ("recall@20", "ndcg@20"):
            row[f"test_{metric}"] = ours["test"][metric]
            row[f"cpu_test_{metric}"] = ref["test"][metric] if ref else None
        row["cpu_best_epoch"] = ref["best_epoch"] if ref else None
        row["cpu_epochs_trained"] = ref["epochs_trained"] if ref else None
        rows.append(row)
    rows[0]["embed_wall_s"] = walls["embed"]
    return rows


def fmt(x, spec: str) -> str:
    return "n/a" if x is None else format(x, spec)


def table(rows: list[dict], device: str) -> str:
    lines = [f"| split | model | test R@20 ({device}) | CPU | diff | test N@20 ({device}) | CPU | diff "
             f"| best / trained epochs ({device}) | CPU | s/epoch | s/eval | run wall s |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        cells = [r["split"], r["model"]]
        for metric in ("recall@20", "ndcg@20"):
            a, b = r[f"test_{metric}"], r[f"cpu_test_{metric}"]
            cells += [fmt(a, ".4f"), fmt(b, ".4f"), "n/a" if b is None else f"{a - b:+.4f}"]
        cells += [f"{r['best_epoch']} / {r['epochs_trained']}",
                  f"{fmt(r['cpu_best_epoch'], '')} / {fmt(r['cpu_epochs_trained'], '')}",
                  fmt(r["s_per_epoch"], ".2f"), fmt(r["s_per_eval"], ".2f"), f"{r['wall_s']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--splits", nargs="+", default=["ml-1m_clean", "ml-1m_noisy"])
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args()
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    params = device_params(args.device, args.out)
    device_name = args.device
    if args.device.startswith("cuda"):
        import torch

        device_name = f"{args.device} ({torch.cuda.get_device_name()}, torch {torch.__version__})"
    start = time.perf_counter()
    rows: list[dict] = []
    with multiprocessing.get_context("spawn").Pool(len(args.splits)) as pool:
        # each split's rows are written as soon as it ends, so a run stopped by a time limit keeps them
        for split_rows in pool.imap_unordered(partial(chain, params_path=params, out=args.out), args.splits):
            rows += split_rows
            text = (f"HDRM released size, seed {SEED}, on {device_name}; CPU = the committed runs of the same seed.\n\n"
                    f"{table(rows, args.device)}\n\nSplits side by side, {time.perf_counter() - start:.0f} s so far.\n")
            print(text, flush=True)
            (args.out / "summary.md").write_text(text)
            (args.out / "summary.json").write_text(json.dumps({"device": device_name, "runs": rows}, indent=2) + "\n")

if __name__ == "__main__":
    main()
