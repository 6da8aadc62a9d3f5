"""Each model's epoch and evaluation pass against its arithmetic floor, measured in one run.

For every model variant asked for (``--models``; on ``--split``, with the settings of params.yaml
and its side inputs as the DAG makes them: clusters, stage-1 points), in its own subprocess (so
peak memory is its own) and with ``--threads`` torch threads:

* **products counted**: one whole training epoch (the trainer's batches, loss, backward and
  optimizer step) and one evaluation pass (valid and test metrics over all users) run under
  torch's ``FlopCounterMode``, which counts every dense matrix product (2 m n k); a sparse CSR
  product counts 2 nnz n, and a product through scipy (``SparseOperator``'s CPU path) is counted
  the same way where it runs;
* **the machine's product rate**: float32 ``torch.mm`` of 2,048 x 2,048 matrices with the same
  thread count, best of 5;
* **floor** = products / rate, the time the epoch (or pass) would take if it were nothing but its
  matrix products at the machine's dense rate; elementwise work, gathers and sparse products
  (memory-bound, far below the dense rate) are what a ratio over 1 is made of;
* **measured**: seconds of one timed epoch (after one warm-up batch) and the median of
  ``--passes`` evaluation passes, and the peak RSS of the process;
* **whole run**: the measured epoch and pass times times the epochs and evaluations of the
  committed run ``runs/<split>/<model>/seed1/history.csv`` (or the embed stage's
  ``data/embeddings/<split>/<model>/history.csv``), where one exists.

    python benchmarks/bench_floor.py [--models hgcf-512 hdrm-512] [--split ml-1m_clean] [--threads 2] [--passes 3]

The numbers are a measurement of this machine, printed, not written into results/ by the DAG.
A model that needs the DAG's inputs (prepared split, clusters, stage-1 points) needs them built
first (``snakemake ... data/embeddings/ml-1m_clean/hgcf-512/user_emb.npy`` and the like).
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import subprocess
import sys
from pathlib import Path

RATE_SIZE = 2048  # the square float32 product that measures the machine's rate


CHILD = r"""
import json, resource, sys, time
import numpy as np, torch
from torch.utils.flop_counter import FlopCounterMode
from pipeline.allocator import keep_freed_memory_if_asked
from pipeline.config import evaluation_config, load_params
from pipeline.data.dataset import dense_rows, load_interactions
from pipeline.evaluation.evaluator import Evaluator
from pipeline.models import layers
from pipeline import plan
from pipeline.training.fitting import build_model, load_clusters, load_hyperbolic

keep_freed_memory_if_asked()  # as `python -m pipeline` does
model_name, split, threads, passes, rate_size = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
torch.set_num_threads(threads)
params = load_params()

# the machine's dense product rate
a, b = torch.randn(rate_size, rate_size), torch.randn(rate_size, rate_size)
best = float("inf")
for _ in range(5):
    t = time.perf_counter(); torch.mm(a, b); best = min(best, time.perf_counter() - t)
rate = 2 * rate_size ** 3 / best
del a, b

def product_flops(x, y):
    if x.layout == torch.sparse_csr:
        return 2 * x._nnz() * y.shape[-1]
    return 2 * x.shape[0] * x.shape[1] * y.shape[1]
def mm(x, y, *args, out_val=None, **kwargs):
    return product_flops(x, y)
def addmm(bias, x, y, *args, out_val=None, **kwargs):
    return product_flops(x, y)
mm._get_raw = addmm._get_raw = True
scipy_flops = [0]
plain_product = layers.SparseOperator._product
def counted_product(self, transpose, x):
    scipy_flops[0] += 2 * self.cpu.nnz * (x.shape[1] if x.dim() == 2 else 1)
    return plain_product(self, transpose, x)

def counting():
    return FlopCounterMode(display=False, custom_mapping={torch.ops.aten.mm: mm, torch.ops.aten.addmm: addmm})

data = load_interactions(f"data/prepared/{split}")
side = {"data": data}
found = plan.clusters_of(params, split, model_name)
clusters = load_clusters(params, model_name, found[0] if found else None, data.n_items)
if clusters is not None:
    side["clusters"] = clusters
hyperbolic = load_hyperbolic(params, model_name, plan.stage1_of(params, split, model_name), data.n_users, data.n_items)
if hyperbolic is not None:
    side["hyperbolic"] = hyperbolic
torch.manual_seed(1)
model = build_model(params, model_name, split, 1, data.n_users, data.n_items, **side)
optimizer = model.optimizer()
matrix = model.input_matrix(data)
evaluation = evaluation_config(params)
evaluator = Evaluator(data, evaluation.topk, evaluation.batch_size)

def epoch(limit=None):
    model.train()
    steps = 0
    for rows, users, *extra in model.batches(matrix):
        optimizer.zero_grad()
        model.loss(rows, users, *extra).backward()
        optimizer.step()
        steps += 1
        if limit and steps >= limit:
            break
    return steps

def evaluate():
    model.eval()
    with torch.no_grad():
        return evaluator.evaluate(lambda users: model.scores(dense_rows(matrix, users), users))

trainable = any(p.requires_grad for p in model.parameters())
epoch_s = epoch_flops = steps = None
if trainable:
    epoch(limit=1)  # warm-up: first-call set-up (packing, allocations) out of the timed epoch
    t = time.perf_counter(); steps = epoch(); epoch_s = time.perf_counter() - t
    layers.SparseOperator._product = counted_product
    with counting() as counter:
        epoch()
    layers.SparseOperator._product = plain_product
    epoch_flops = counter.get_total_flops() + scipy_flops[0]
    scipy_flops[0] = 0
evaluate()
evals = []
for _ in range(passes):
    t = time.perf_counter(); evaluate(); evals.append(time.perf_counter() - t)
layers.SparseOperator._product = counted_product
with counting() as counter:
    evaluate()
layers.SparseOperator._product = plain_product
print(json.dumps({"rate": rate, "epoch_flops": epoch_flops, "steps": steps, "epoch_s": epoch_s,
                  "eval_flops": counter.get_total_flops() + scipy_flops[0], "eval_s": float(np.median(evals)),
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "n_parameters": sum(p.numel() for p in model.parameters())}))
"""


def measure(model: str, split: str, threads: int, passes: int) -> dict:
    """The child's measurement of one model (see the module docstring)."""
    out = subprocess.run([sys.executable, "-c", CHILD, model, split, str(threads), str(passes), str(RATE_SIZE)],
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{model}: the measurement failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def committed_schedule(split: str, model: str) -> tuple[int, int] | None:
    """(epochs trained, evaluations) of the committed run of ``model`` on ``split`` (seed 1, or
    the embed stage's run), None where there is none."""
    for folder in (Path("runs") / split / model / "seed1", Path("data/embeddings") / split / model):
        history = folder / "history.csv"
        if history.exists():
            with history.open() as f:
                rows = list(csv.DictReader(f))
            evaluations = sum(1 for r in rows if any(k.startswith("valid_") and r[k] for k in r))
            return len(rows), evaluations
    return None


def _s(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["hgcf-512", "hdrm-512"])
    parser.add_argument("--split", default="ml-1m_clean")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--passes", type=int, default=3)
    args = parser.parse_args(argv)
    print(f"# {platform.processor() or platform.machine()}, {args.threads} torch threads, split {args.split}")
    print("| model | steps | GFLOP / epoch | rate GFLOP/s | floor s / epoch | s / epoch | ratio "
          "| GFLOP / pass | floor s / pass | s / pass | ratio | peak RSS MB | whole run |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for model in args.models:
        m = measure(model, args.split, args.threads, args.passes)
        rate = m["rate"]
        floor_epoch = None if m["epoch_flops"] is None else m["epoch_flops"] / rate
        floor_eval = m["eval_flops"] / rate
        ratio_epoch = None if floor_epoch is None or floor_epoch == 0 else m["epoch_s"] / floor_epoch
        schedule = committed_schedule(args.split, model)
        whole = "–"
        if schedule is not None and m["epoch_s"] is not None:
            epochs, evaluations = schedule
            seconds = epochs * m["epoch_s"] + evaluations * m["eval_s"]
            whole = f"{seconds / 60:.1f} min ({epochs} epochs, {evaluations} passes)"
        print(f"| {model} | {m['steps'] or '–'} | {_s(None if m['epoch_flops'] is None else m['epoch_flops'] / 1e9)} "
              f"| {rate / 1e9:.0f} | {_s(floor_epoch)} | {_s(m['epoch_s'])} | {_s(ratio_epoch)} "
              f"| {m['eval_flops'] / 1e9:.2f} | {floor_eval:.3f} | {m['eval_s']:.2f} "
              f"| {m['eval_s'] / floor_eval if floor_eval else float('nan'):.1f} | {m['peak_rss_mb']:.0f} | {whole} |",
              flush=True)


if __name__ == "__main__":
    main()
