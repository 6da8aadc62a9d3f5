"""TV-Diff's committed runs evaluated with the released inference: input dropout left on.

The released ``AnisotropicNN`` is never put in eval mode, so the authors' numbers come from an
inference that keeps dropout 0.5 on the input row at each of the T reverse steps; ours switches
it off (``pipeline/models/tvdiff.py``, "Differences from the released code"). This script
measures what that choice is worth on the committed runs: for each run of ``--runs`` (default:
every committed ``runs/<split>/tvdiff/seed<N>`` of the authors' protocol splits), it loads the
run's ``model.pt`` (the best epoch's weights), evaluates it as the pipeline does (eval mode; the
test Recall@20 / NDCG@20 must equal the run's ``metrics.json``, a check of the loading), then
``--draws`` times with the released inference (train mode, the step-by-step loop, dropout
masks from torch's generator seeded 1, 2, ...), and prints both with the difference and the
paper's number (``workflow/paper_results.csv``). The released inference cannot be folded
(a fresh dropout mask at every step), so it costs T full denoiser calls per user: seconds on
lastfm (T 5), about ten minutes a draw on amazon-beauty (T 50), on the run's one thread.

    python benchmarks/tvdiff_released_inference.py [--runs runs/lastfm_authors/tvdiff/seed1 ...] [--draws 3]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.config import evaluation_config, load_params  # noqa: E402
from pipeline.data.dataset import dense_rows, load_interactions  # noqa: E402
from pipeline.evaluation.evaluator import Evaluator  # noqa: E402
from pipeline.training.checkpoint import load_checkpoint  # noqa: E402
from pipeline.training.fitting import build_model  # noqa: E402

METRICS = ("recall@20", "ndcg@20")


def default_runs(params: dict) -> list[Path]:
    """Every committed TV-Diff run on a split of the authors' protocol."""
    splits = [s for s, entry in params["splits"].items() if entry.get("setting") == "authors"]
    return [p for s in splits for p in sorted((ROOT / "runs" / s / "tvdiff").glob("seed*")) if (p / "model.pt").exists()]


def paper_numbers(params: dict) -> dict[tuple[str, str], float]:
    """(dataset, metric) -> TV-Diff's published value."""
    table = pl.read_csv(ROOT / params["paper_results"])
    rows = table.filter(pl.col("model") == "TV-Diff").iter_rows(named=True)
    return {(r["dataset"], r["metric"]): float(r["value"]) for r in rows}


def inference_metrics(model, data, evaluation, draws: int) -> tuple[dict[str, float], list[dict[str, float]]]:
    """Test means of ``model`` (a TVDiff) evaluated as the pipeline does (eval mode), and
    ``draws`` times with the released inference (train mode: the step-by-step loop with a fresh
    input dropout mask at every reverse step, torch's generator seeded 1, 2, ...)."""
    evaluator = Evaluator(data, evaluation.topk, evaluation.batch_size)
    matrix = model.input_matrix(data)

    def score(users: np.ndarray) -> torch.Tensor:
        return model.scores(dense_rows(matrix, users), users)

    model.eval()
    ours = evaluator.evaluate(score, ("test",)).means["test"]
    model.train()
    released = []
    for draw in range(1, draws + 1):
        torch.manual_seed(draw)
        released.append(evaluator.evaluate(score, ("test",)).means["test"])
    model.eval()
    return ours, released


def evaluate(run: Path, params: dict, draws: int) -> dict:
    """:func:`inference_metrics` of a committed run's ``model.pt`` (its best epoch's weights),
    checked against its ``metrics.json``."""
    split, seed = run.parent.parent.name, int(run.name.removeprefix("seed"))
    data = load_interactions(ROOT / "data" / "prepared" / split)
    model = build_model(params, "tvdiff", split, seed, data.n_users, data.n_items, data=data)
    model.load_state_dict(load_checkpoint(run / "model.pt", made_by="train")["model"])
    t0 = time.perf_counter()
    ours, released = inference_metrics(model, data, evaluation_config(params), draws)
    seconds = time.perf_counter() - t0
    committed = json.loads((run / "metrics.json").read_text())["test"]
    for m in METRICS:
        if abs(ours[m] - committed[m]) > 1e-6:
            raise SystemExit(f"{run}: eval-mode test {m} {ours[m]:.6f} differs from metrics.json's {committed[m]:.6f}: "
                             "the model or data is not the run's")
    return {"split": split, "dataset": params["splits"][split]["dataset"], "seed": seed,
            "ours": {m: ours[m] for m in METRICS}, "released": {m: [r[m] for r in released] for m in METRICS},
            "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="*", type=Path, help="run folders (default: the authors' protocol's TV-Diff runs)")
    parser.add_argument("--draws", type=int, default=3, help="released-inference evaluations per run (dropout draws)")
    args = parser.parse_args()
    params = load_params(ROOT / "params.yaml")
    paper = paper_numbers(params)
    runs = [r.resolve() for r in args.runs] if args.runs else default_runs(params)
    print("| split | seed | metric | ours (dropout off) | released inference (dropout on), mean [min, max] | Δ | paper | ours / paper − 1 | released / paper − 1 |")
    print("|---|---:|---|---:|---|---:|---:|---:|---:|")
    for run in runs:
        r = evaluate(run, params, args.draws)
        for m in METRICS:
            ours, rel = r["ours"][m], r["released"][m]
            mean = float(np.mean(rel))
            ref = paper.get((r["dataset"], m))
            vs = (f"{ref:.4f} | {ours / ref - 1:+.1%} | {mean / ref - 1:+.1%}" if ref else "– | – | –")
            print(f"| {r['split']} | {r['seed']} | {m} | {ours:.4f} | {mean:.4f} [{min(rel):.4f}, {max(rel):.4f}] | "
                  f"{mean - ours:+.4f} | {vs} |", flush=True)
        print(f"<!-- {r['split']} seed {r['seed']}: {r['seconds']:.1f} s for the eval-mode pass and "
              f"{args.draws} released draw(s) -->", flush=True)


if __name__ == "__main__":
    main()
