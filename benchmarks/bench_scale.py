"""Benchmark: one DiffRec and one L-DiffRec epoch plus one evaluation pass at ML-1M, Yelp and
Amazon-book scale; prints seconds and peak memory.

    python benchmarks/bench_scale.py [--scales ml-1m yelp amazon-book] [--models diffrec ldiffrec]
                                     [--device cpu|cuda|auto] [--data real|synthetic]

Data. With ``--data real`` (the default) a scale uses the prepared clean split
``data/prepared/<scale>_clean`` when it exists; otherwise (and always with ``--data synthetic``)
the synthetic generator's preset of that name (``params.yaml`` ``synthetic.presets``: the users,
items and interactions of DiffRec's clean dataset, long-tailed), split per user in time order
with ``protocol.ratios``. The parent process makes each scale's data once and saves the three
CSR matrices to a scratch folder; every (scale, model) measurement then runs in a child process
of its own, so its peak RSS (``ru_maxrss``) is that of loading, building, training and
evaluating one model, not of the data generation.

Models. The shared trainer (``pipeline.training.trainer.train_run``) runs exactly one epoch and
one evaluation pass (valid + test, all users, in user chunks) with the authors' best settings of
the clean dataset (``../shared/reference/README.md``; DiffRec on Amazon-book: dims [1000], T 5);
``params.yaml``'s ``per_split`` block wins where it has the split. L-DiffRec needs item clusters:
at synthetic scale there are no item embeddings, so items are dealt to the 2 clusters
alternately by popularity rank (the cost depends on the cluster sizes only).

Target: Amazon-book-scale DiffRec, one epoch + one full evaluation pass, peak RSS
<= 8 GB on the 2-core, 24 GB machine; L-DiffRec lower still.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.allocator import keep_freed_memory_if_asked  # noqa: E402
from pipeline.config import load_params  # noqa: E402

SCALES = ("ml-1m", "yelp", "amazon-book")
MODELS = ("diffrec", "ldiffrec")

# The authors' best settings for the clean datasets (../shared/reference/README.md, "Best settings
# from the released code"); params.yaml's per_split block takes precedence where it has the split.
AUTHORS_CLEAN = {
    "diffrec": {
        "ml-1m": {"lr": 1e-3, "dims": [200, 600], "steps": 40, "noise_scale": 0.005, "noise_min": 0.005, "noise_max": 0.01},
        "yelp": {"lr": 1e-5, "dims": [1000], "steps": 5, "noise_scale": 0.01, "noise_min": 0.001, "noise_max": 0.01},
        "amazon-book": {"lr": 5e-5, "dims": [1000], "steps": 5, "noise_scale": 1e-4, "noise_min": 5e-4, "noise_max": 5e-3},
    },
    "ldiffrec": {
        "ml-1m": {"lr_ae": 1e-3, "lr_denoiser": 5e-4, "dims": [300], "steps": 40, "noise_scale": 0.005, "noise_min": 0.005,
                  "noise_max": 0.02, "lamda": 0.03},
        "yelp": {"lr_ae": 5e-4, "lr_denoiser": 1e-4, "dims": [300], "steps": 5, "noise_scale": 0.01, "noise_min": 0.005,
                 "noise_max": 0.01, "lamda": 0.03},
        "amazon-book": {"lr_ae": 5e-4, "lr_denoiser": 1e-4, "dims": [300], "steps": 5, "noise_scale": 0.5, "noise_min": 0.001,
                        "noise_max": 0.005, "lamda": 0.05},
    },
}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# ------------------------------------------------------------------------------------ data


def chronological_split(matrix: sp.csr_matrix, timestamps: np.ndarray, ratios) -> tuple[sp.csr_matrix, ...]:
    """Per user, in time order: the first ratios[0] share is train, then valid, then test (the
    prepare stage's rule, vectorised over the CSR arrays)."""
    n_users = matrix.shape[0]
    counts = np.diff(matrix.indptr)
    users = np.repeat(np.arange(n_users), counts)
    order = np.lexsort((matrix.indices, timestamps, users))  # by user, then time (ties: item)
    position = np.empty(len(order), dtype=np.int64)
    position[order] = np.arange(len(order)) - np.repeat(matrix.indptr[:-1], counts)
    n_train = np.floor(counts * ratios[0]).astype(np.int64)
    n_valid = np.floor(counts * (ratios[0] + ratios[1])).astype(np.int64) - n_train
    part = np.where(position < n_train[users], 0, np.where(position < (n_train + n_valid)[users], 1, 2))
    out = []
    for k in range(3):
        keep = part == k
        m = sp.csr_matrix((matrix.data[keep], (users[keep], matrix.indices[keep])), shape=matrix.shape, dtype=np.float32)
        m.sort_indices()
        out.append(m)
    rank = sp.csr_matrix(((position[part == 0] + 1).astype(np.float32), (users[part == 0], matrix.indices[part == 0])),
                         shape=matrix.shape, dtype=np.float32)
    rank.sort_indices()
    return (*out, rank)


def make_data(scale: str, mode: str, params: dict, folder: Path) -> dict:
    """Write the scale's train/valid/test/rank matrices to ``folder``; returns a description."""
    from pipeline.data.dataset import load_interactions

    start = time.perf_counter()
    prepared = ROOT / "data" / "prepared" / f"{scale}_clean"
    if mode == "real" and (prepared / "interactions.parquet").exists():
        d = load_interactions(prepared)
        mats, source, kind = (d.train, d.valid, d.test, d.train_rank), f"real ({prepared.relative_to(ROOT)})", "real"
    else:
        from pipeline.data.synthetic import synthetic_matrix

        matrix, timestamps = synthetic_matrix(scale, params)
        mats = chronological_split(matrix, timestamps, params["protocol"]["ratios"])
        source, kind = f"synthetic (preset {scale})", "synthetic"
    folder.mkdir(parents=True, exist_ok=True)
    for name, m in zip(("train", "valid", "test", "rank"), mats):
        sp.save_npz(folder / f"{name}.npz", m, compressed=False)
    n_users, n_items = mats[0].shape
    return {"scale": scale, "source": source, "kind": kind, "n_users": n_users, "n_items": n_items,
            "interactions": int(sum(m.nnz for m in mats[:3])), "seconds": time.perf_counter() - start}


# ------------------------------------------------------------------------------------ one measurement


def hyper(params: dict, model: str, scale: str) -> dict:
    block = params["models"][model]
    split = f"{scale}_clean"
    overrides = (block.get("per_split") or {}).get(split) or AUTHORS_CLEAN[model][scale]
    return {**(block.get("defaults") or {}), **overrides, "epochs": 1}  # the rest: the Config's code defaults


def measure(scale: str, model_name: str, folder: Path, device: str) -> dict:
    """One epoch + one evaluation pass of one model (run in a child process)."""
    from pipeline.config import evaluation_config, training_config
    from pipeline.data.dataset import InteractionData
    from pipeline.training.fitting import build_model
    from pipeline.training.trainer import resolve_device, train_run

    params = load_params()
    mats = {n: sp.load_npz(folder / f"{n}.npz").tocsr() for n in ("train", "valid", "test", "rank")}
    n_users, n_items = mats["train"].shape
    data = InteractionData(n_users, n_items, mats["train"], mats["valid"], mats["test"], mats["rank"])
    rss_data = peak_rss_mb()
    split = f"{scale}_clean"
    run_params = copy.deepcopy(params)
    run_params["models"][model_name] = {**params["models"][model_name], "defaults": hyper(params, model_name, scale), "per_split": {}}
    side = {"data": data}
    if model_name == "ldiffrec":
        popularity = np.asarray(data.train.sum(axis=0)).ravel()
        clusters = np.empty(n_items, dtype=np.int64)
        clusters[np.argsort(-popularity, kind="stable")] = np.arange(n_items) % 2
        side["clusters"] = clusters
    model = build_model(run_params, model_name, split, 1, n_users, n_items, **side)
    training = dataclasses.replace(training_config(params), device=device, eval_every=1, checkpoint_every=10**9)
    evaluation = evaluation_config(params)
    identity = {"model": model_name, "split": split, "seed": 1, "config": dataclasses.asdict(model.config)}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        start = time.perf_counter()
        train_run(model, data, training, evaluation, tmp / "run", identity, 1, tag=f"bench {scale} {model_name}",
                  timing_path=tmp / "timing.json")
        wall = time.perf_counter() - start
        timing = json.loads((tmp / "timing.json").read_text())
    out = {"scale": scale, "model": model_name, "parameters": sum(p.numel() for p in model.parameters()),
           "device": str(resolve_device(device)), "epoch_s": timing["seconds_per_epoch"], "eval_s": timing["seconds_per_eval"],
           "wall_s": wall, "peak_rss_mb": peak_rss_mb(), "rss_after_data_mb": rss_data}
    if out["device"].startswith("cuda"):
        import torch

        out["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


# ------------------------------------------------------------------------------------ driver


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", nargs="+", default=list(SCALES), choices=SCALES)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"))
    parser.add_argument("--data", default="real", choices=("real", "synthetic"))
    parser.add_argument("--one", nargs=3, metavar=("SCALE", "MODEL", "FOLDER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    keep_freed_memory_if_asked()  # as `python -m pipeline` does (pipeline/allocator.py)

    if args.one:
        scale, model, folder = args.one
        print("RESULT " + json.dumps(measure(scale, model, Path(folder), args.device)), flush=True)
        return

    params = load_params()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for scale in args.scales:
            info = make_data(scale, args.data, params, Path(tmp) / scale)
            print(f"{scale}: {info['source']}: {info['n_users']:,} users x {info['n_items']:,} items, "
                  f"{info['interactions']:,} interactions (made in {info['seconds']:.1f} s)", flush=True)
            for model in args.models:
                cmd = [sys.executable, __file__, "--device", args.device, "--one", scale, model, str(Path(tmp) / scale)]
                proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
                lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
                if proc.returncode != 0 or not lines:
                    print(proc.stdout[-3000:], proc.stderr[-3000:], sep="\n")
                    raise SystemExit(f"{scale} {model}: the measurement failed (exit {proc.returncode})")
                row = {**json.loads(lines[-1][len("RESULT "):]), "users": info["n_users"], "items": info["n_items"], "data": info["kind"]}
                rows.append(row)
                print(f"  {model:9s} {row['parameters'] / 1e6:7.1f} M params on {row['device']}: epoch {row['epoch_s']:8.1f} s, "
                      f"evaluation pass {row['eval_s']:8.1f} s, peak RSS {row['peak_rss_mb'] / 1024:5.2f} GB", flush=True)

    print()
    print("| scale | data | users | items | model | parameters | device | epoch (s) | eval pass (s) | peak RSS (GB) |")
    print("|---|---|---:|---:|---|---:|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['scale']} | {r['data']} | {r['users']:,} | {r['items']:,} | {r['model']} | {r['parameters'] / 1e6:.1f} M | "
              f"{r['device']} | {r['epoch_s']:.1f} | {r['eval_s']:.1f} | {r['peak_rss_mb'] / 1024:.2f} |")


if __name__ == "__main__":
    main()
