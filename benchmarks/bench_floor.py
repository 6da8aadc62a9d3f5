"""Each model's epoch and evaluation pass against its arithmetic floor, measured in one run.

For every model variant asked for (``--models``; on ``--split``, with the settings of params.yaml,
a tuned variant at the grid point nearest its untuned setting, and its side inputs as the DAG
makes them: clusters, stage-1 points), in its own subprocess (so
peak memory is its own) and with ``--threads`` torch threads:

* **products counted** (``benchmarks/products.py``): one whole training epoch (the trainer's
  batches, loss, backward and optimizer step) and one evaluation pass (valid and test metrics over
  all users): every dense matrix product (2 m n k; oneDNN's fused linear layers of
  ``pipeline/models/fast/linear.py`` too), every sparse CSR product and every product through
  scipy (``SparseOperator``'s CPU path; 2 nnz n each);
* **the machine's product rate**: a float32 product of 2,048 x 2,048 matrices with the same
  thread count, best of 5, through MKL (``torch.mm``) and through oneDNN (the DiffRec family's
  products): the faster;
* **floor** = products / rate, the time the epoch (or pass) would take if it were nothing but its
  matrix products at the machine's dense rate; elementwise work, gathers and sparse products
  (memory-bound, far below the dense rate) are what a ratio over 1 is made of;
* **floor*** = the dense products at that rate plus each sparse product (*sparse*: their share
  of the products) timed on the model's own matrix and width with the faster of scipy's and
  torch's CSR kernel on this machine (best of 3): the yardstick for the graph models, whose
  products are sparse and memory-bound;
* **ranking**: the evaluation pass on the model's own scores computed beforehand (the evaluator's
  masking, top-k and metrics, and its copy of each chunk of scores): what a pass costs whatever
  the model, and which no product floor counts; **ratio†** = the pass / (floor* + ranking), the
  model's scoring against its products with the ranking taken as it is;
* **measured**: seconds of an epoch, the median of the epochs timed after three warm-up steps
  (a process's first steps fault its heap in and would count set-up as work on a split whose
  epoch is one or a few steps): three epochs, or as many as make three optimizer steps if that is
  more (one timed epoch moved a ratio by 0.1-0.3 between runs of the script), the median of
  ``--passes`` evaluation passes, and the peak RSS of the process;
* **whole run**: the measured epoch and pass times times the epochs and evaluations of the
  committed run ``runs/<split>/<model>/seed1/history.csv``, where one exists.

    make bench-floor     # builds the inputs, then: python benchmarks/bench_floor.py
    python benchmarks/bench_floor.py [--models hgcf-512 hdrm-512] [--split ml-1m_clean] [--threads 2] [--passes 3] [--cores 2]
    python benchmarks/bench_floor.py --choose-threads [--cores 2]

``--choose-threads`` measures every variant with 1 and with ``--cores`` threads and prints each
one's speed-ups, then the whole table's wall time (the packing below) with params.yaml's threads,
with 1 or ``--cores`` threads for every model, and with the choice that packs it shortest
(``choose_threads``: from one thread each, give all the cores to the model whose switch shortens
the wall most, while one does). Each measurement also hashes the model's weights after its
epochs and every user's metrics of a pass: a model whose bits differ between 1 and ``--cores``
threads keeps params.yaml's count (a thread count that changes rounding is a parameter of its
runs); the others may move without changing a result. The script prints the choice and changes
nothing.

The numbers are a measurement of this machine, printed, not written into results/ by the DAG.
A model that needs the DAG's inputs (prepared split, clusters, stage-1 points) needs them built
first: ``--inputs`` prints them as Snakemake targets (``make bench-floor`` builds them).

Without ``--models`` every variant the plan trains on the split's dataset is measured (a variant
with no job on ``--split``, e.g. T-DiffRec, on the first split it has one), each with its own
thread count, and the script ends with **the whole table**: every train, tune (grid point) and
embed job of the plan on that dataset, each costed as its model's start-up plus the measured epoch
and pass times times the epochs and evaluations of its committed run (a grid point: of the run its
variant trains with that seed; an embed job, and a tuned variant's train job for the seed its grid
ran with, which copies the selected point's run: one start-up), summed into job-seconds and
core-seconds, with the wall time on ``--cores`` cores (jobs longest first, each as soon as its
threads are free; the order the stages impose is not modelled) and the products' floor, for
the whole and for each of its parts (``table_part``: the first table; HDRM at the released size;
TV-Diff at the released budget with its grids), each part as if it ran alone. The
measurement is on one split; the same model's runs on the other splits of the dataset are costed
with it.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import platform
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

from pipeline import plan

ROOT = Path(__file__).resolve().parents[1]


CHILD = r"""
import time
started = time.perf_counter()
import hashlib, json, resource, sys
import numpy as np, torch
from benchmarks.bench_floor import measured_point
from benchmarks.products import WARMUP_STEPS, Products, dense_rate
from pipeline.allocator import keep_freed_memory_if_asked
from pipeline.config import evaluation_config, load_params, training_config
from pipeline.data.dataset import dense_rows, load_interactions
from pipeline.evaluation.evaluator import Evaluator
from pipeline import plan
from pipeline.models import fast
from pipeline.training.fitting import build_model, load_clusters, load_hyperbolic
from pipeline.training.trainer import set_determinism

keep_freed_memory_if_asked()  # as `python -m pipeline` does
model_name, split, threads, passes = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
params = load_params()
set_determinism(1, threads)  # as the trainer runs: seed, threads, torch's deterministic algorithms
fast.set_enabled(training_config(params, split).fast)

rate_start = time.perf_counter()
rate = dense_rate()  # the machine's dense product rate
rate_s = time.perf_counter() - rate_start
products = Products()

data = load_interactions(f"data/prepared/{split}")
side = {"data": data}
found = plan.clusters_of(params, split, model_name)
clusters = load_clusters(params, model_name, found[0] if found else None, data.n_items)
if clusters is not None:
    side["clusters"] = clusters
hyperbolic = load_hyperbolic(params, model_name, plan.stage1_of(params, split, model_name), data.n_users, data.n_items)
if hyperbolic is not None:
    side["hyperbolic"] = hyperbolic
point = measured_point(params, model_name, split)
model = build_model(params, model_name, split, 1, data.n_users, data.n_items, tuned=point, **side)
torch.set_num_threads(threads)  # build_model set the variant's own threads (params.yaml)
optimizer = model.optimizer()
matrix = model.input_matrix(data)
evaluation = evaluation_config(params)
evaluator = Evaluator(data, evaluation.topk, evaluation.batch_size)
startup_s = time.perf_counter() - started - rate_s  # imports, data, model (EASE: its closed form)

TIMED_EPOCHS, TIMED_STEPS = 3, 3  # whole epochs are timed until there are this many and they add up to
# this many steps; their median is reported

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
    with torch.no_grad(), model.scoring_pass():
        return evaluator.evaluate(lambda users: model.scores(dense_rows(matrix, users), users))

trainable = any(p.requires_grad for p in model.parameters())
epoch_s = epoch_flops = steps = None
epoch_sparse_s = epoch_sparse_flops = 0.0
if trainable:
    # warm-up: first-call set-up (packing, allocations) and the heap's growth to its working size
    # (each of a process's first steps faults fresh pages in) out of the timed epochs
    done = 0
    while done < WARMUP_STEPS:
        done += epoch(limit=WARMUP_STEPS - done)
    timed, timed_steps = [], 0
    while len(timed) < TIMED_EPOCHS or timed_steps < TIMED_STEPS:
        t = time.perf_counter(); steps = epoch(); timed.append(time.perf_counter() - t)
        timed_steps += steps
    epoch_s = float(np.median(timed))
    products.sparse.clear()
    with products.counting():
        epoch()
    epoch_flops = products.flops
    epoch_sparse_s, epoch_sparse_flops = products.sparse_floor()
result = evaluate()
evals = []
for _ in range(passes):
    t = time.perf_counter(); evaluate(); evals.append(time.perf_counter() - t)
# what the run computed, bit for bit: the weights after the steps above (warm-up, timed and
# counted epochs) and every user's metrics of the first pass
state = hashlib.sha256()
for name, tensor in model.state_dict().items():
    state.update(name.encode()); state.update(tensor.detach().cpu().contiguous().numpy().tobytes())
scores = hashlib.sha256()
for split_name, values in sorted(result.per_user.items()):
    for metric, array in sorted(values.items()):
        scores.update(f"{split_name}/{metric}".encode()); scores.update(np.ascontiguousarray(array).tobytes())
products.sparse.clear()
with products.counting():
    evaluate()
eval_sparse_s, eval_sparse_flops = products.sparse_floor()
# the pass's ranking alone: the evaluator on the same scores, computed once and looked up (each
# chunk a view: the evaluator makes the same copy of it it makes of a model's scores)
model.eval()
with torch.no_grad():
    every = torch.cat([model.scores(dense_rows(matrix, users), users).to(torch.float32)
                       for users in (np.arange(start, min(start + evaluation.batch_size, data.n_users))
                                     for start in range(0, data.n_users, evaluation.batch_size))])
ranks = []
for _ in range(passes):
    t = time.perf_counter(); evaluator.evaluate(lambda users: every[int(users[0]):int(users[-1]) + 1]); ranks.append(time.perf_counter() - t)
del every
print(json.dumps({"rate": rate, "epoch_flops": epoch_flops, "steps": steps, "epoch_s": epoch_s,
                  "epoch_sparse_s": epoch_sparse_s, "epoch_sparse_flops": epoch_sparse_flops,
                  "eval_sparse_s": eval_sparse_s, "eval_sparse_flops": eval_sparse_flops,
                  "eval_flops": products.flops, "eval_s": float(np.median(evals)), "rank_s": float(np.median(ranks)),
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "n_parameters": sum(p.numel() for p in model.parameters()), "startup_s": startup_s,
                  "state_sha256": state.hexdigest(), "eval_sha256": scores.hexdigest()}))
"""


def measured_point(params: dict, model: str, split: str) -> dict | None:
    """The grid point a tuned variant is measured at: the one nearest its untuned setting (most
    hyperparameters equal, the first on ties), a setting the DAG trains on the split, where the
    untuned one may be another dataset's (TV-Diff's code defaults: bpr on pair batches, which no
    ML-1M job runs); None for a variant untuned there."""
    if not plan.is_tuned(params, model, split):
        return None
    from pipeline.config import model_config  # imports the model's file (torch)

    untuned = dataclasses.asdict(model_config(params, model, split))
    points = plan.grid_points(params, model, split)
    return max(points, key=lambda p: (sum(untuned.get(k) == v for k, v in p.items()), -points.index(p)))


def measure(model: str, split: str, threads: int, passes: int) -> dict:
    """The child's measurement of one model (see the module docstring)."""
    out = subprocess.run([sys.executable, "-c", CHILD, model, split, str(threads), str(passes)],
                         capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        raise SystemExit(f"{model}: the measurement failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def schedule(folder: Path) -> tuple[int, int] | None:
    """(epochs trained, evaluations) of the run whose ``history.csv`` is in ``folder``, None where
    there is none."""
    history = folder / "history.csv"
    if not history.exists():
        return None
    with history.open() as f:
        rows = list(csv.DictReader(f))
    evaluations = sum(1 for r in rows if any(k.startswith("valid_") and r[k] for k in r))
    return len(rows), evaluations


class Job(NamedTuple):
    """One job of the DAG as the table estimate counts it."""
    kind: str  # train, tune (one grid point) or embed
    split: str
    model: str
    seed: int
    folder: Path  # the run whose schedule the job is costed with


def table_jobs(params: dict, dataset: str) -> list[Job]:
    """Every train, tune (grid point) and embed job of the plan on ``dataset``'s splits, each with
    the committed run whose epochs and evaluations cost it: a train job its own run; a grid point
    the run its variant trains with that seed (the grid changes settings, not the schedule's
    length: an estimate); an embed job (an export) its source run, for the record. A grid point
    that another variant's run is (:func:`pipeline.plan.shared_points`) is a copy, not a job; a
    later seed's train run that turns out to be one once the tune stage has selected
    (:func:`pipeline.plan.twin_runs`) is costed as a job: the selection is not known in advance."""
    on = lambda split: params["splits"][split]["dataset"] == dataset  # noqa: E731
    jobs = [Job("train", r.split, r.model, r.seed, Path(plan.RUN_DIR.format(split=r.split, model=r.model, seed=r.seed)))
            for r in plan.trained_runs(params) if on(r.split)]
    for r in plan.tune_runs(params):
        if on(r.split):
            folder = Path(plan.RUN_DIR.format(split=r.split, model=r.model, seed=r.seed))
            shared = plan.shared_points(params, r.split, r.model)
            jobs += [Job("tune", r.split, r.model, r.seed, folder)
                     for i, _ in enumerate(plan.grid_points(params, r.model, r.split)) if i not in shared]
    for split, model in plan.embed_jobs(params):
        if on(split):  # an export of a train run's vectors: costed as one start-up
            source = plan.embed_source(params, split, model)
            jobs.append(Job("embed", split, model, source.seed, Path(plan.RUN_DIR.format(**source._asdict()))))
    return jobs


RELEASED_STAGE1 = "hgcf-512"  # HDRM's stage 1 at the released size (params.yaml); the hgcf class's default is 64-d
PARTS = {"first": "the first table", "hdrm": "HDRM at the released size", "tvdiff": "TV-Diff at the released budget"}


def table_part(params: dict, model: str) -> str:
    """The part of the whole table (a key of ``PARTS``) a variant's jobs belong to: HDRM at the released size
    (its 512-d stage 1 and every stage 2 that reads it), TV-Diff with the released budget and its
    chosen settings (every variant of the tvdiff class, grids included), or the first table: every
    other model, at the sizes and settings the speed target of docs/benchmarks.md was set for."""
    if model == RELEASED_STAGE1 or ("hyperbolic" in plan.requires(params, model)
                                    and plan.stage1_model(params, model) == RELEASED_STAGE1):
        return "hdrm"
    if plan.declared(params, model).key == "tvdiff":
        return "tvdiff"
    return "first"


def measured_split(jobs: list[Job], model: str, preferred: str) -> str:
    """``preferred`` where the model has a job there, else the first split it has one on."""
    splits = [j.split for j in jobs if j.model == model]
    return preferred if preferred in splits or not splits else splits[0]


def inputs(params: dict, split: str, model: str) -> list[str]:
    """The DAG's outputs the measurement of ``model`` on ``split`` reads (not the tune folder:
    the benchmark builds a tuned variant at a grid point)."""
    tune = plan.TUNE_DIR.format(split=split, model=model)
    return [p for p in plan.train_inputs(params, plan.Run(split, model, 1)) if p != tune]


def missing_inputs(params: dict, split: str, model: str) -> list[str]:
    """:func:`inputs` that this checkout lacks."""
    return [p for p in inputs(params, split, model) if not Path(p).exists()]


def not_measured(params: dict, split: str, model: str) -> str | None:
    """Why ``model`` cannot be measured on ``split`` here (the inputs to build), or None."""
    missing = missing_inputs(params, split, model)
    if not missing:
        return None
    return f"not measured: build `snakemake --cores 2 {' '.join(missing)}` (or run `make bench-floor`) first"


def run_seconds(m: dict, epochs: int, evaluations: int) -> float:
    """A run's seconds from a model's measurement ``m``: start-up, then its epochs and passes."""
    return m["startup_s"] + epochs * (m["epoch_s"] or 0.0) + evaluations * m["eval_s"]


def wall_time(durations: list[tuple[float, int]], cores: int) -> float:
    """Wall seconds of jobs (seconds, threads) on ``cores`` cores: longest first, each started as
    soon as its threads are free (the DAG's order between stages is not modelled)."""
    running: list[tuple[float, int]] = []  # (finish time, threads)
    now, free = 0.0, cores
    for seconds, threads in sorted(durations, reverse=True):
        threads = min(threads, cores)
        while free < threads:
            running.sort()
            finish, released = running.pop(0)
            now, free = max(now, finish), free + released
        running.append((now + seconds, threads))
        free -= threads
    return max([now] + [finish for finish, _ in running])


def cost_jobs(params: dict, jobs: list[Job], measured: dict[str, dict[int, dict]], threads: dict[str, int]
              ) -> tuple[list[tuple[Job, float, int]], list[Job], dict[str, float]]:
    """Each job of ``jobs`` as (job, seconds, threads), its model run with ``threads[model]`` threads
    and costed with the measurement ``measured[model][threads]`` times its committed schedule (an
    embed export, and a tuned variant's train job for its grid's seed, which copies the selected
    point: one start-up); the jobs without a measurement or a schedule; and each model's seconds
    of products at the dense rate (its floor) over the costed jobs."""
    costed, unknown, floors = [], [], {}
    grid_seed = {(r.split, r.model): r.seed for r in plan.tune_runs(params)}
    for job in jobs:
        n = threads.get(job.model, 1)
        m, known = measured.get(job.model, {}).get(n), schedule(job.folder)
        copied = job.kind == "train" and grid_seed.get((job.split, job.model)) == job.seed  # the selected grid run
        if m is not None and (job.kind == "embed" or copied):  # a start-up, nothing trained
            costed.append((job, m["startup_s"], 1))
            continue
        if m is None or known is None:
            unknown.append(job)
            continue
        epochs, evaluations = known
        floors[job.model] = floors.get(job.model, 0.0) + (epochs * (m["epoch_flops"] or 0) + evaluations * m["eval_flops"]) / m["rate"]
        costed.append((job, run_seconds(m, epochs, evaluations), n))
    return costed, unknown, floors


def same_results(by_threads: dict[int, dict]) -> bool:
    """True where a model computed the same bits (weights after the measured epochs, every user's
    metrics) at every thread count measured."""
    return len({(m["state_sha256"], m["eval_sha256"]) for m in by_threads.values()}) == 1


def choose_threads(params: dict, jobs: list[Job], measured: dict[str, dict[int, dict]], cores: int) -> dict[str, int]:
    """Threads per model for the shortest whole-table wall time on ``cores`` cores (``wall_time``'s
    packing): from one thread each, switch to the most threads measured the model whose switch
    shortens the wall most, while one does. A model whose results depend on its thread count
    (:func:`same_results`) keeps params.yaml's: changing it would change its runs."""
    def wall(choice: dict[str, int]) -> float:
        return wall_time([(sec, n) for _, sec, n in cost_jobs(params, jobs, measured, choice)[0]], cores)

    fixed = {model: plan.run_threads(params, model) for model, by in measured.items() if not same_results(by)}
    choice = {model: fixed.get(model, 1) for model in measured}
    best = wall(choice)
    while True:
        trials = [(wall({**choice, model: max(by)}), model) for model, by in measured.items()
                  if model not in fixed and choice[model] != max(by)]
        better = [(w, model) for w, model in trials if w < best]
        if not better:
            return choice
        best, model = min(better)
        choice[model] = max(measured[model])


def print_thread_choice(params: dict, jobs: list[Job], models: list[str], args: argparse.Namespace) -> None:
    """``--choose-threads``: each variant measured with 1 and with ``--cores`` threads, its
    speed-ups, and the whole table's wall time with params.yaml's threads, with 1 or ``--cores``
    for every model, and with ``choose_threads``'s choice."""
    wide = args.cores
    measured: dict[str, dict[int, dict]] = {}
    print(f"# threads per job, split {args.split}: each variant measured alone with 1 and with {wide} threads")
    print(f"| model | s / epoch, 1 thread | {wide} threads | speed-up | s / pass, 1 thread | {wide} threads | speed-up "
          f"| same bits | params.yaml |")
    print("|---|---:|---:|---:|---:|---:|---:|:---:|---:|")
    for model in models:
        split = measured_split(jobs, model, args.split)
        why = not_measured(params, split, model)
        if why:
            print(f"| {model} | {why} |", flush=True)
            continue
        by = measured[model] = {n: measure(model, split, n, args.passes) for n in (1, wide)}
        one, many = by[1], by[wide]
        epoch = (f"{_s(one['epoch_s'])} | {_s(many['epoch_s'])} | {one['epoch_s'] / many['epoch_s']:.2f}"
                 if one["epoch_s"] else "– | – | –")
        print(f"| {model} | {epoch} | {one['eval_s']:.2f} | {many['eval_s']:.2f} | {one['eval_s'] / many['eval_s']:.2f} "
              f"| {'yes' if same_results(by) else 'no'} | {plan.run_threads(params, model)} |", flush=True)
    policies = {
        "params.yaml": {model: plan.run_threads(params, model) for model in measured},
        "1 thread each": {model: 1 for model in measured},
        f"{wide} threads each": {model: wide for model in measured},
    }
    chosen = policies["chosen"] = choose_threads(params, jobs, measured, args.cores)
    print(f"\n# The whole table's wall on {args.cores} cores (longest first, stage order not modelled)")
    for name, choice in policies.items():
        costed = cost_jobs(params, jobs, measured, choice)[0]
        print(f"- {name}: {wall_time([(sec, n) for _, sec, n in costed], args.cores) / 60:.1f} min, "
              f"{sum(sec for _, sec, _ in costed):,.0f} job-seconds")
    print(f"- chosen: {wide} threads for " + (", ".join(m for m, n in chosen.items() if n == wide) or "none")
          + "; 1 thread for the rest")
    moved = [f"{m} {plan.run_threads(params, m)} -> {n}" for m, n in chosen.items() if n != plan.run_threads(params, m)]
    print("- params.yaml differs from the choice for: " + (", ".join(moved) or "none")
          + " (each computes the same bits at both counts: moving it changes no result)")
    kept = [m for m, by in measured.items() if not same_results(by)]
    if kept:
        print(f"- results depend on the thread count, kept at params.yaml's: {', '.join(kept)}")


def _s(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}"


def main(argv: list[str] | None = None) -> None:
    from pipeline.config import load_params

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", help="variants to measure (default: every one the plan runs on the split's dataset)")
    parser.add_argument("--split", default="ml-1m_clean")
    parser.add_argument("--threads", type=int, help="torch threads (default: each variant's own, as the DAG runs it)")
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--cores", type=int, default=2, help="cores of the whole-table wall-time estimate")
    parser.add_argument("--inputs", action="store_true", help="print the DAG outputs the measurements read, one per line (Snakemake targets), and stop")
    parser.add_argument("--targets", choices=list(PARTS),
                        help="print the Snakemake targets of one part of the whole table (its train runs on the split's "
                             "dataset; what they need follows), one per line, and stop: `make reproduce TARGETS=...` times it")
    parser.add_argument("--choose-threads", action="store_true",
                        help="measure every variant with 1 and with --cores threads and print the threads per model that pack the whole table shortest")
    args = parser.parse_args(argv)
    params = load_params()
    dataset = params["splits"][args.split]["dataset"]
    jobs = table_jobs(params, dataset)
    models = args.models or list(dict.fromkeys(j.model for j in jobs))
    if args.targets:
        print("\n".join(dict.fromkeys(f"{j.folder}/metrics.json" for j in jobs
                                       if j.kind == "train" and table_part(params, j.model) == args.targets)))
        return
    if args.inputs:
        needed = [p for m in models for p in inputs(params, measured_split(jobs, m, args.split), m)]
        print("\n".join(dict.fromkeys(needed)))
        return
    if args.choose_threads:
        print_thread_choice(params, jobs, models, args)
        return
    print(f"# {platform.processor() or platform.machine()}, split {args.split} (models without a job there: "
          f"their first split), each variant with {'%d torch threads' % args.threads if args.threads else 'its own threads'}")
    print("| model | split | threads | steps | GFLOP / epoch | sparse | rate GFLOP/s | floor s / epoch | floor* | s / epoch "
          "| ratio | ratio* | GFLOP / pass | floor s / pass | floor* | s / pass | ratio | ratio* | ranking s | ratio† "
          "| start-up s | peak RSS MB | whole run |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    measured: dict[str, dict] = {}
    for model in models:
        split = measured_split(jobs, model, args.split)
        threads = args.threads or plan.run_threads(params, model)
        why = not_measured(params, split, model)
        if why:
            print(f"| {model} | {split} | {threads} | {why} |", flush=True)
            continue
        m = measured[model] = measure(model, split, threads, args.passes)
        rate = m["rate"]
        floor_epoch = None if m["epoch_flops"] is None else m["epoch_flops"] / rate
        floor_eval = m["eval_flops"] / rate
        ratio_epoch = None if not floor_epoch else m["epoch_s"] / floor_epoch
        # floor*: the sparse products at this machine's best kernel for them, the rest at the dense rate
        star_epoch = None if m["epoch_flops"] is None else (m["epoch_flops"] - m["epoch_sparse_flops"]) / rate + m["epoch_sparse_s"]
        star_eval = (m["eval_flops"] - m["eval_sparse_flops"]) / rate + m["eval_sparse_s"]
        sparse_share = None if not m["epoch_flops"] else m["epoch_sparse_flops"] / m["epoch_flops"]
        whole = "–"
        own = [j for j in jobs if j.model == model and j.split == split]
        known = schedule(own[0].folder) if own else None
        if known is not None:
            epochs, evaluations = known
            seconds = run_seconds(m, epochs, evaluations)
            whole = f"{seconds / 60:.1f} min ({epochs} epochs, {evaluations} passes)"
        print(f"| {model} | {split} | {threads} | {m['steps'] or '–'} "
              f"| {_s(None if m['epoch_flops'] is None else m['epoch_flops'] / 1e9)} "
              f"| {'–' if sparse_share is None else f'{sparse_share:.0%}'} "
              f"| {rate / 1e9:.0f} | {_s(floor_epoch)} | {_s(star_epoch)} | {_s(m['epoch_s'])} | {_s(ratio_epoch)} "
              f"| {_s(None if not star_epoch else m['epoch_s'] / star_epoch)} "
              f"| {m['eval_flops'] / 1e9:.2f} | {floor_eval:.3f} | {star_eval:.3f} | {m['eval_s']:.2f} "
              f"| {m['eval_s'] / floor_eval if floor_eval else float('nan'):.1f} "
              f"| {m['eval_s'] / star_eval if star_eval else float('nan'):.1f} | {m['rank_s']:.2f} "
              f"| {m['eval_s'] / (star_eval + m['rank_s']):.1f} | {m['startup_s']:.1f} "
              f"| {m['peak_rss_mb']:.0f} | {whole} |", flush=True)
    if args.models:
        return
    # the whole table: every job costed with its committed schedule and its model's measurement
    threads = {model: args.threads or plan.run_threads(params, model) for model in measured}
    costed, unknown, floors = cost_jobs(params, jobs, {model: {threads[model]: m} for model, m in measured.items()}, threads)
    floor_total = sum(floors.values())
    floor_core = sum(f * threads[model] for model, f in floors.items())
    job_seconds = sum(seconds for _, seconds, _ in costed)
    by_kind = {kind: sum(s for j, s, _ in costed if j.kind == kind) for kind in ("train", "tune", "embed")}
    print(f"\n# The whole {dataset} table: {len(costed)} jobs costed ({', '.join(f'{k} {v:,.0f} s' for k, v in by_kind.items())})")
    print(f"- job-seconds: {job_seconds:,.0f} (start-up {sum(measured[j.model]['startup_s'] for j, _, _ in costed):,.0f} of them, "
          f"{sum(1 for j, _, _ in costed if j.kind == 'embed')} embed exports)")
    print(f"- core-seconds: {sum(seconds * threads for _, seconds, threads in costed):,.0f}")
    print(f"- wall on {args.cores} cores (longest first, stage order not modelled): "
          f"{wall_time([(s, t) for _, s, t in costed], args.cores) / 60:.1f} min")
    print(f"- arithmetic floor (products at the dense rate): {floor_total:,.0f} s of products, {floor_core:,.0f} "
          f"core-seconds at the jobs' threads: no packing runs the table in under {floor_core / args.cores / 60:.1f} min "
          f"on {args.cores} cores")
    for part, label in PARTS.items():  # each part alone on the cores, as if the others were not planned
        mine = [(j, s, t) for j, s, t in costed if table_part(params, j.model) == part]
        core = sum(f * threads[model] for model, f in floors.items() if table_part(params, model) == part)
        print(f"- {label} (--targets {part}): {len(mine)} jobs, {sum(s for _, s, _ in mine):,.0f} job-seconds, "
              f"{sum(s * t for _, s, t in mine):,.0f} core-seconds, wall {wall_time([(s, t) for _, s, t in mine], args.cores) / 60:.1f} min "
              f"on {args.cores} cores, floor {core:,.0f} core-seconds ({core / args.cores / 60:.1f} min)")
    heaviest = sorted(((sum(s for j, s, _ in costed if j.model == model), model) for model in measured), reverse=True)
    print("- by model, job-seconds (floor): "
          + ", ".join(f"{model} {s:,.0f} s ({floors.get(model, 0.0):,.0f})" for s, model in heaviest if s))
    if unknown:
        print(f"- not costed ({len(unknown)}: no measurement or no committed schedule): "
              + ", ".join(sorted({f'{j.kind} {j.model}' for j in unknown})))


if __name__ == "__main__":
    main()
