"""Rewrite the top-level ``plots:`` block of dvc.yaml from params.yaml: one validation-curve plot
per split listing the history.csv of every planned run (tests/test_aggregate.py checks it).

Run after changing ``experiments`` in params.yaml:  python workflow/scripts/dvc_plots.py
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from pipeline.config import load_params, planned_runs  # noqa: E402

MARKER = "\nplots:\n"


def render(params: dict) -> str:
    metric = params["training"]["select_metric"]
    name = metric.replace("recall", "Recall").replace("ndcg", "NDCG")
    lines = ["plots:"]
    runs = planned_runs(params)
    for split in dict.fromkeys(split for split, _, _ in runs):
        lines += [
            f"  - valid_{metric}_{split}:",
            f'      title: "{split}: validation {name} per epoch"',
            "      template: workflow/report/dvc_curve_template.json",
            "      x: epoch",
            "      x_label: epoch",
            f"      y_label: validation {name}",
            "      y:",
        ]
        lines += [f"        runs/{s}/{m}/seed{seed}/history.csv: valid_{metric}" for s, m, seed in runs if s == split]
    return "\n".join(lines) + "\n"


def main() -> None:
    path = ROOT / "dvc.yaml"
    text = path.read_text()
    head, sep, _ = text.partition(MARKER)
    if not sep:
        raise SystemExit(f"{path}: no top-level 'plots:' block")
    path.write_text(head + "\n" + render(load_params(ROOT / "params.yaml")))
    print(f"{path}: plots block rewritten")


if __name__ == "__main__":
    main()
