"""Benchmark: one DiffRec and one L-DiffRec epoch plus one evaluation pass at ML-1M, Yelp and
Amazon-book scale, against their arithmetic floors; prints seconds, floors and peak memory.

    python benchmarks/bench_scale.py [--scales ml-1m yelp amazon-book] [--models diffrec ldiffrec]
                                     [--device cpu|cuda|auto] [--data real|synthetic] [--steps N]

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

Measured. Without ``--steps``: the whole epoch and pass, timed by the trainer. With ``--steps N``
(an Amazon-book DiffRec epoch takes minutes on 2 cores): N training steps after
``products.WARMUP_STEPS`` warm-up ones, scaled to the epoch's batches; and the evaluation pass:
its first chunk of users timed on its own (it also makes what the model keeps for a whole pass,
e.g. DiffRec's folded operands, and first touches the score buffers), then the next N chunks;
the pass is the first chunk plus the mean of the N times the chunks left. The warm-up steps
allocate the optimizer's state, but the trainer's copy of the best state and its checkpoints are
not made, so this mode's peak RSS is below a run's (the whole-epoch mode's is the figure of
record).

Floor (``benchmarks/products.py``): the products of the loss and backward pass of one full batch
and of the scores of one evaluation chunk, counted and scaled to all users (every product of
DiffRec and L-DiffRec is linear in the batch's rows), at the machine's dense float32 rate (a
2,048 x 2,048 product with the same threads, the faster of MKL and oneDNN, measured before and
after the timed work: the higher, as the host's speed drifts over minutes). The ratio
measured / floor is what elementwise work, the random draws, the optimizer and the product
kernels' shortfall on these shapes add.

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


def count_products(model, data, batch: int, chunk: int, device) -> tuple[float, float]:
    """FLOPs of the products of one training epoch and one evaluation pass: those of the loss and
    backward pass of one full batch, scaled to all users, and those of a pass's first chunk beyond
    a chunk (the operands a pass makes once) plus one chunk's scaled to all users (every product of
    DiffRec and L-DiffRec is linear in the batch's rows)."""
    import torch

    from pipeline.data.dataset import dense_rows
    from products import Products

    products = Products()
    matrix = model.input_matrix(data)
    users = np.arange(min(data.n_users, batch))
    model.train()
    with products.counting():
        model.loss(dense_rows(matrix, users).to(device), users).backward()
    model.zero_grad(set_to_none=True)
    epoch_flops = products.flops * data.n_users / len(users)
    users = np.arange(min(data.n_users, chunk))
    rows = dense_rows(matrix, users).to(device)
    model.eval()
    with torch.no_grad(), model.scoring_pass():  # a pass: what it makes once (DiffRec's folded
        with products.counting():              # operands) at its first chunk, then each chunk
            model.scores(rows, users)
        first = products.flops
        with products.counting():
            model.scores(rows, users)
    return epoch_flops, first - products.flops + products.flops * data.n_users / len(users)


def measure(scale: str, model_name: str, folder: Path, device: str, steps: int) -> dict:
    """One epoch + one evaluation pass of one model (run in a child process): the whole epoch and
    pass through the shared trainer, or with ``steps`` that many training steps and evaluation
    chunks, scaled to the epoch and the pass; and the products of one full batch and one
    evaluation chunk, scaled the same way (every product of DiffRec and L-DiffRec is linear in the
    batch's rows)."""
    import torch

    from pipeline.config import evaluation_config, training_config
    from pipeline.data.dataset import InteractionData, dense_rows
    from pipeline.evaluation.evaluator import Evaluator, chunk_users
    from pipeline.models import fast
    from pipeline.training.fitting import build_model
    from pipeline.training.trainer import resolve_device, set_determinism, train_run
    from products import WARMUP_STEPS, dense_rate

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
    chunk = chunk_users(evaluation.batch_size, n_items)  # users per evaluation chunk, as the evaluator takes them
    batch = model.config.batch_size
    n_steps = -(-n_users // batch)  # the epoch's batches of users
    set_determinism(1, training.threads)  # the run's threads, for the rate too
    rate = dense_rate()
    if steps:
        fast.set_enabled(training.fast)
        dev = resolve_device(device)
        model.to(dev)
        optimizer = model.optimizer()
        matrix = model.input_matrix(data)
        batches = model.batches(matrix)

        def step() -> None:
            rows, users, *extra = next(batches)
            optimizer.zero_grad()
            model.loss(rows.to(dev), users, *extra).backward()
            optimizer.step()

        model.train()
        timed = min(steps, n_steps - WARMUP_STEPS)  # the epoch's batches after the warm-up ones
        if timed < 1:
            raise SystemExit(f"{scale} {model_name}: an epoch of {n_steps} batches has nothing to time after {WARMUP_STEPS} "
                             "warm-up steps; run without --steps")
        for _ in range(WARMUP_STEPS):  # the optimizer's state, first-call set-up, the heap's working size
            step()
        start = time.perf_counter()
        for _ in range(timed):
            step()
        epoch_s = (time.perf_counter() - start) / timed * n_steps
        # the evaluation pass: its first chunk (which also makes what a model keeps for a whole
        # pass, e.g. DiffRec's folded operands, and first touches the score buffers) timed on its
        # own, then the next chunks; the pass = the first chunk + the steady chunks' mean x the rest
        model.eval()
        n_chunks = -(-n_users // chunk)
        timed_chunks = min(steps, n_chunks - 1)

        def users_from(first: int, count: int) -> InteractionData:
            end = min(n_users, first + count)
            return InteractionData(end - first, n_items, *(m[first:end] for m in (mats["train"], mats["valid"], mats["test"], mats["rank"])))

        with torch.no_grad(), model.scoring_pass():  # the chunks below are one pass, as the trainer's
            score = lambda users: model.scores(dense_rows(matrix, users).to(dev), users).cpu()  # noqa: E731
            first = Evaluator(users_from(0, chunk), evaluation.topk, chunk)
            start = time.perf_counter()
            first.evaluate(score)
            first_chunk_s = time.perf_counter() - start
            if timed_chunks:
                rest = Evaluator(users_from(chunk, timed_chunks * chunk), evaluation.topk, chunk)
                start = time.perf_counter()
                rest.evaluate(score)
                chunk_s = (time.perf_counter() - start) / timed_chunks
            else:
                chunk_s = 0.0
        eval_s = first_chunk_s + chunk_s * (n_chunks - 1)
        measured = f"{timed} steps; evaluation: first chunk {first_chunk_s:.2f} s, then {timed_chunks} x {chunk_s:.2f} s"
    else:
        identity = {"model": model_name, "split": split, "seed": 1, "config": dataclasses.asdict(model.config)}
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            train_run(model, data, training, evaluation, tmp / "run", identity, 1, tag=f"bench {scale} {model_name}",
                      timing_path=tmp / "timing.json")
            timing = json.loads((tmp / "timing.json").read_text())
        epoch_s, eval_s = timing["seconds_per_epoch"], timing["seconds_per_eval"]
        measured = "whole epoch and pass"
    epoch_flops, eval_flops = count_products(model, data, batch, chunk, resolve_device(device))
    rate = max(rate, dense_rate())  # again after the timed work: the host's speed drifts over minutes
    out = {"scale": scale, "model": model_name, "parameters": sum(p.numel() for p in model.parameters()),
           "device": str(resolve_device(device)), "epoch_s": epoch_s, "eval_s": eval_s, "steps": n_steps,
           "epoch_flops": epoch_flops, "eval_flops": eval_flops, "rate": rate, "measured": measured,
           "peak_rss_mb": peak_rss_mb(), "rss_after_data_mb": rss_data}
    if out["device"].startswith("cuda"):
        out["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


# ------------------------------------------------------------------------------------ driver


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", nargs="+", default=list(SCALES), choices=SCALES)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"))
    parser.add_argument("--data", default="real", choices=("real", "synthetic"))
    parser.add_argument("--steps", type=int, default=0,
                        help="time this many training steps and evaluation chunks and scale them to the epoch and the pass "
                             "(default 0: the whole epoch and pass through the trainer)")
    parser.add_argument("--one", nargs=3, metavar=("SCALE", "MODEL", "FOLDER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    keep_freed_memory_if_asked()  # as `python -m pipeline` does (pipeline/allocator.py)

    if args.one:
        scale, model, folder = args.one
        print("RESULT " + json.dumps(measure(scale, model, Path(folder), args.device, args.steps)), flush=True)
        return

    params = load_params()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for scale in args.scales:
            info = make_data(scale, args.data, params, Path(tmp) / scale)
            print(f"{scale}: {info['source']}: {info['n_users']:,} users x {info['n_items']:,} items, "
                  f"{info['interactions']:,} interactions (made in {info['seconds']:.1f} s)", flush=True)
            for model in args.models:
                cmd = [sys.executable, __file__, "--device", args.device, "--steps", str(args.steps), "--one", scale, model,
                       str(Path(tmp) / scale)]
                proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
                lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
                if proc.returncode != 0 or not lines:
                    print(proc.stdout[-3000:], proc.stderr[-3000:], sep="\n")
                    raise SystemExit(f"{scale} {model}: the measurement failed (exit {proc.returncode})")
                row = {**json.loads(lines[-1][len("RESULT "):]), "users": info["n_users"], "items": info["n_items"], "data": info["kind"]}
                rows.append(row)
                print(f"  {model:9s} {row['parameters'] / 1e6:7.1f} M params on {row['device']}: epoch {row['epoch_s']:8.1f} s "
                      f"(floor {row['epoch_flops'] / row['rate']:7.1f} s), evaluation pass {row['eval_s']:8.1f} s "
                      f"(floor {row['eval_flops'] / row['rate']:6.1f} s), peak RSS {row['peak_rss_mb'] / 1024:5.2f} GB "
                      f"[{row['measured']}]", flush=True)

    print()
    print("floor = the products of the epoch (pass), counted, at the machine's dense float32 rate (rate: a 2,048 x 2,048 "
          "product with the same threads, the faster of MKL and oneDNN)")
    print("| scale | data | users | items | model | parameters | device | rate GFLOP/s | steps | GFLOP / epoch | floor s "
          "| epoch (s) | ratio | GFLOP / pass | floor s | eval pass (s) | ratio | peak RSS (GB) | measured |")
    print("|---|---|---:|---:|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        floor_epoch, floor_eval = r["epoch_flops"] / r["rate"], r["eval_flops"] / r["rate"]
        print(f"| {r['scale']} | {r['data']} | {r['users']:,} | {r['items']:,} | {r['model']} | {r['parameters'] / 1e6:.1f} M | "
              f"{r['device']} | {r['rate'] / 1e9:.0f} | {r['steps']} | {r['epoch_flops'] / 1e9:,.0f} | {floor_epoch:,.1f} "
              f"| {r['epoch_s']:,.1f} | {r['epoch_s'] / floor_epoch:.1f} | {r['eval_flops'] / 1e9:,.0f} | {floor_eval:,.1f} "
              f"| {r['eval_s']:,.1f} | {r['eval_s'] / floor_eval:.1f} | {r['peak_rss_mb'] / 1024:.2f} | {r['measured']} |")

if __name__ == "__main__":
    main()
