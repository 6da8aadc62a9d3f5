"""Efficiency table like the DiffRec paper's: DiffRec vs L-DiffRec per dataset.

ML-1M (measured here, on DiffRec's released clean split with the authors' best settings):
parameters, peak RSS of a run, seconds per training epoch and per evaluation pass (valid + test
metrics over all users), each model measured in its own subprocess so peak memory is its own.
Yelp and Amazon-book (not available offline): parameter counts computed from the datasets'
item counts (DiffRec's statistics) by building the models (not trained), with the
authors' settings for those datasets (DiffRec dims [1000]; L-DiffRec 2 clusters of equal size,
latent 300, denoiser [300]).

    python benchmarks/bench_efficiency.py [--epochs 3] [--out results/efficiency.md]

The output is a measurement of this machine, so it is written by this script, not by the DAG.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

# (dataset, n_users, n_items) of the clean splits, DiffRec's statistics
DATASETS = [("ml-1m", 5949, 2810), ("yelp", 54574, 34395), ("amazon-book", 108822, 94949)]
SPLIT_FOR_SETTINGS = {"ml-1m": "ml-1m_clean"}


def measure(model: str, epochs: int, data: str) -> dict:
    """Run in a subprocess: ``epochs`` training epochs + one evaluation, report timings and RSS."""
    code = f"""
import json, resource, time, dataclasses
import numpy as np, torch
from pipeline.config import load_params, evaluation_config, training_config
from pipeline.data.dataset import load_interactions, dense_rows
from pipeline.evaluation.evaluator import Evaluator
from pipeline.training.run import build_model, load_clusters
from pipeline.training.trainer import set_determinism
params = load_params()
data = load_interactions({data!r})
side = {{"data": data}}
clusters = load_clusters(params, {model!r}, "data/clusters/ml-1m_clean", data.n_items)
if clusters is not None:
    side["clusters"] = clusters
m = build_model(params, {model!r}, "ml-1m_clean", 1, data.n_users, data.n_items, **side)
opt = m.optimizer(); matrix = m.input_matrix(data); bs = m.config.batch_size
times = []
for _ in range({epochs}):
    m.train(); t = time.perf_counter(); order = torch.randperm(data.n_users).numpy()
    for s in range(0, data.n_users, bs):
        u = order[s:s + bs]; opt.zero_grad(); loss = m.loss(dense_rows(matrix, u), u); loss.backward(); opt.step()
    times.append(time.perf_counter() - t)
m.eval(); ev = Evaluator(data, evaluation_config(params).topk, evaluation_config(params).batch_size)
t = time.perf_counter(); ev.evaluate(lambda u: m.scores(dense_rows(matrix, u), u)); eval_s = time.perf_counter() - t
print(json.dumps({{"n_parameters": sum(p.numel() for p in m.parameters()), "seconds_per_epoch": float(np.median(times)),
                  "seconds_per_eval": eval_s, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def parameter_count(model: str, n_users: int, n_items: int) -> int:
    from pipeline.config import load_params, model_config
    from pipeline.models import MODELS

    params = load_params()
    cfg = model_config(params, model, "ml-1m_clean")
    if model == "diffrec":
        cfg = type(cfg)(**{**cfg.__dict__, "dims": [1000]})
    side = {}
    if getattr(MODELS[model], "needs_clusters", False):
        side["clusters"] = (np.arange(n_items) >= n_items // 2).astype(np.int64)
    m = MODELS[model](cfg, n_users, n_items, **side)  # built in memory: ~0.8 GB for Amazon-book DiffRec
    count = sum(p.numel() for p in m.parameters())
    del m
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--data", default="data/prepared/ml-1m_clean")
    parser.add_argument("--out", default="results/efficiency.md")
    args = parser.parse_args()

    rows = []
    for model, name in (("diffrec", "DiffRec"), ("ldiffrec", "L-DiffRec")):
        m = measure(model, args.epochs, args.data)
        rows.append(("ml-1m", name, m["n_parameters"], f"{m['peak_rss_mb']:.0f}", f"{m['seconds_per_epoch']:.2f}", f"{m['seconds_per_eval']:.2f}"))
        print(f"ml-1m {name}: {m}", flush=True)
    for dataset, n_users, n_items in DATASETS[1:]:
        for model, name in (("diffrec", "DiffRec"), ("ldiffrec", "L-DiffRec")):
            rows.append((dataset, name, parameter_count(model, n_users, n_items), "–", "–", "–"))
    lines = [
        "# Efficiency: DiffRec vs L-DiffRec",
        "",
        f"Written by `python benchmarks/bench_efficiency.py --epochs {args.epochs}` on {platform.machine()} with "
        f"{torch.get_num_threads()} torch threads (a 2-core CPU machine); ML-1M measured on the released clean split "
        "(median epoch time, one evaluation pass = valid and test metrics over all users, peak RSS of the whole "
        "process). Yelp and Amazon-book: parameter counts from the item counts (DiffRec [1000]; L-DiffRec with two "
        "equal clusters, latent 300, denoiser [300]); not run here.",
        "",
        "| dataset | model | parameters | peak RSS (MB) | s / epoch | s / evaluation |",
        "|---|---|---:|---:|---:|---:|",
    ]
    lines += [f"| {d} | {n} | {p:,} | {r} | {e} | {v} |" for d, n, p, r, e, v in rows]
    for dataset in ("ml-1m", "yelp", "amazon-book"):
        d = {n: p for ds, n, p, *_ in rows if ds == dataset}
        lines.append("")
        lines.append(f"- {dataset}: L-DiffRec has {d['L-DiffRec'] / d['DiffRec']:.1%} of DiffRec's parameters.")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
