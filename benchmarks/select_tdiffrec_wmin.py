"""Choose T-DiffRec's w_min on ML-1M by validation Recall@20 (the paper has no ML-1M setting).

Trains T-DiffRec (DiffRec's ML-1M clean setting, w_max 1.0) on the ml-1m_temporal split for each
w_min in the grid with seed 1, and prints validation and test Recall@20 / NDCG@20 per value. The
selection uses validation only; put the winner in params.yaml (models.tdiffrec.per_split).

    python benchmarks/select_tdiffrec_wmin.py [--grid 0.1 0.3 0.5 0.7] [--data data/prepared/ml-1m_temporal]
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import tempfile
from pathlib import Path

from pipeline.config import evaluation_config, load_params, training_config
from pipeline.data.dataset import load_interactions
from pipeline.training.fitting import build_model
from pipeline.training.trainer import train_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", type=float, nargs="+", default=[0.1, 0.3, 0.5, 0.7])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--split", default="ml-1m_temporal")
    parser.add_argument("--data", default="data/prepared/ml-1m_temporal")
    args = parser.parse_args()

    base = load_params()
    data = load_interactions(args.data)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for w_min in args.grid:
            params = copy.deepcopy(base)
            params["models"]["tdiffrec"].setdefault("per_split", {}).setdefault(args.split, {})
            params["models"]["tdiffrec"]["per_split"][args.split] = {**params["models"]["tdiffrec"]["per_split"][args.split], "w_min": w_min}
            model = build_model(params, "tdiffrec", args.split, args.seed, data.n_users, data.n_items)
            identity = {"model": "tdiffrec", "split": args.split, "seed": args.seed, "config": dataclasses.asdict(model.config)}
            run_dir = Path(tmp) / f"w{w_min}"
            m = train_run(model, data, training_config(params), evaluation_config(params), run_dir, identity, args.seed,
                          tag=f"tdiffrec w_min={w_min}", timing_path=run_dir / "timing.json")
            rows.append((w_min, m["best_epoch"], m["valid"]["recall@20"], m["valid"]["ndcg@20"], m["test"]["recall@20"], m["test"]["ndcg@20"]))
    best = max(rows, key=lambda r: r[2])
    print(f"\nT-DiffRec on {args.split}, seed {args.seed}, w_max 1.0")
    print("w_min  best_epoch  valid_R@20  valid_N@20  test_R@20  test_N@20")
    for r in rows:
        print(f"{r[0]:5.2f}  {r[1]:10d}  {r[2]:10.4f}  {r[3]:10.4f}  {r[4]:9.4f}  {r[5]:9.4f}" + ("   <- best valid" if r is best else ""))


if __name__ == "__main__":
    main()
