"""Efficiency table like the DiffRec paper's: DiffRec vs L-DiffRec per dataset, plus TV-Diff and HDRM.

ML-1M (measured here, on DiffRec's released clean split with the settings of params.yaml: the
authors' best for the DiffRec family): parameters, peak RSS of a run, seconds per training epoch
and per evaluation pass (valid + test metrics over all users; median of ``--passes``, default 3, so
the first pass's one-off set-up does not decide it), each model measured in its own
subprocess so peak memory is its own. HDRM is measured on the embed-hyperbolic stage's points
(data/embeddings/ml-1m_clean/hgcf; stage 1 itself is not timed here).
Yelp and Amazon-book (not available offline): parameter counts computed from the datasets'
item counts (DiffRec's statistics) by building the models (not trained), with the
authors' settings for those datasets (DiffRec dims [1000]; L-DiffRec 2 clusters of equal size,
latent 300, denoiser [300]).

    python benchmarks/bench_efficiency.py [--epochs 3] [--passes 3] [--out results/efficiency.md] [--json results/efficiency.json]

The output is a measurement of this machine, so it is written by this script, not by the DAG.
It writes the table (``--out``) and the same numbers, as shown there, machine-readable
(``--json``: command, epochs, machine, torch_threads, description, rows of dataset, model,
n_parameters, peak_rss_mb, seconds_per_epoch, seconds_per_eval; null where not measured); the
aggregate stage draws results/figures/efficiency.png from the JSON.

    python benchmarks/bench_efficiency.py --from-markdown results/efficiency.md

measures nothing: it reads an efficiency.md this script wrote earlier, writes its JSON, and
checks that the table rendered from the JSON is the file it read.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

# (dataset, n_users, n_items) of the clean splits, DiffRec's statistics
DATASETS = [("ml-1m", 5949, 2810), ("yelp", 54574, 34395), ("amazon-book", 108822, 94949)]
SPLIT_FOR_SETTINGS = {"ml-1m": "ml-1m_clean"}


def measure(model: str, epochs: int, data: str, passes: int) -> dict:
    """Run in a subprocess: ``epochs`` training epochs + ``passes`` evaluations, report the median
    epoch and evaluation times and the peak RSS."""
    code = f"""
import json, resource, time, dataclasses
import numpy as np, torch
from pipeline.config import load_params, evaluation_config, training_config
from pipeline.data.dataset import load_interactions, dense_rows
from pipeline.evaluation.evaluator import Evaluator
from pipeline.training.fitting import build_model, load_clusters, load_hyperbolic
from pipeline.allocator import keep_freed_memory_if_asked
keep_freed_memory_if_asked()  # as `python -m pipeline` does
params = load_params()
data = load_interactions({data!r})
side = {{"data": data}}
clusters = load_clusters(params, {model!r}, "data/clusters/ml-1m_clean", data.n_items)
if clusters is not None:
    side["clusters"] = clusters
hyperbolic = load_hyperbolic(params, {model!r}, "data/embeddings/ml-1m_clean/hgcf" if {model!r} == "hdrm" else None,
                             data.n_users, data.n_items)
if hyperbolic is not None:
    side["hyperbolic"] = hyperbolic
m = build_model(params, {model!r}, "ml-1m_clean", 1, data.n_users, data.n_items, **side)
opt = m.optimizer(); matrix = m.input_matrix(data); bs = m.config.batch_size
times = []
for _ in range({epochs}):
    m.train(); t = time.perf_counter(); order = torch.randperm(data.n_users).numpy()
    for s in range(0, data.n_users, bs):
        u = order[s:s + bs]; opt.zero_grad(); loss = m.loss(dense_rows(matrix, u), u); loss.backward(); opt.step()
    times.append(time.perf_counter() - t)
m.eval(); ev = Evaluator(data, evaluation_config(params).topk, evaluation_config(params).batch_size)
evals = []
for _ in range({max(1, passes)}):
    t = time.perf_counter()
    with m.scoring_pass():
        ev.evaluate(lambda u: m.scores(dense_rows(matrix, u), u))
    evals.append(time.perf_counter() - t)
eval_s = float(np.median(evals))
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
    if "clusters" in MODELS[model].requires:
        side["clusters"] = (np.arange(n_items) >= n_items // 2).astype(np.int64)
    m = MODELS[model](cfg, n_users, n_items, **side)  # built in memory: ~0.8 GB for Amazon-book DiffRec
    count = sum(p.numel() for p in m.parameters())
    del m
    return count


MODELS = (("diffrec", "DiffRec"), ("ldiffrec", "L-DiffRec"))  # at every scale
ML1M_ONLY = (("tvdiff", "TV-Diff"), ("tvdiff-argsp", "TV-Diff (AR-GSP)"), ("hdrm", "HDRM"))  # measured on ML-1M
DESCRIPTION = (
    "ML-1M measured on the released clean split with the settings of params.yaml (median epoch time; median "
    "of the evaluation passes after training (--passes), each valid and test metrics over all users; peak RSS of "
    "the whole process; HDRM on the "
    "embed-hyperbolic stage's 64-d points, its stage 1 not included). Yelp and Amazon-book: parameter counts "
    "from the item counts (DiffRec [1000]; L-DiffRec with two equal clusters, latent 300, denoiser [300]); "
    "not run here."
)
ROW_KEYS = ("dataset", "model", "n_parameters", "peak_rss_mb", "seconds_per_epoch", "seconds_per_eval")


def _dash(x, fmt: str) -> str:
    return "–" if x is None else format(x, fmt)


def render_markdown(record: dict) -> str:
    """results/efficiency.md from the record that results/efficiency.json holds."""
    lines = [
        "# Efficiency: DiffRec vs L-DiffRec (and TV-Diff, HDRM on ML-1M)",
        "",
        f"Written by `{record['command']}` on {record['machine']} with {record['torch_threads']} torch threads "
        f"(a 2-core CPU machine); {record['description']}",
        "",
        "| dataset | model | parameters | peak RSS (MB) | s / epoch | s / evaluation |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in record["rows"]:
        lines.append(
            f"| {r['dataset']} | {r['model']} | {r['n_parameters']:,} | {_dash(r['peak_rss_mb'], '.0f')} | "
            f"{_dash(r['seconds_per_epoch'], '.2f')} | {_dash(r['seconds_per_eval'], '.2f')} |"
        )
    for dataset in dict.fromkeys(r["dataset"] for r in record["rows"]):
        d = {r["model"]: r["n_parameters"] for r in record["rows"] if r["dataset"] == dataset}
        lines.append("")
        lines.append(f"- {dataset}: L-DiffRec has {d['L-DiffRec'] / d['DiffRec']:.1%} of DiffRec's parameters.")
    return "\n".join(lines) + "\n"


def render_json(record: dict) -> str:
    return json.dumps(record, indent=2) + "\n"


def parse_markdown(text: str) -> dict:
    """The record behind an efficiency.md written by :func:`render_markdown` (numbers as shown)."""
    m = re.search(r"Written by `(?P<command>[^`]*--epochs (?P<epochs>\d+)[^`]*)` on (?P<machine>\S+) with "
                  r"(?P<threads>\d+) torch threads \(a 2-core CPU machine\); (?P<description>.*)$", text, re.M)
    if not m:
        raise ValueError("efficiency.md: no 'Written by ...' line")

    def num(cell: str, kind):
        return None if cell == "–" else kind(cell.replace(",", ""))

    rows = []
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 6 and cells[0] not in ("dataset", "---"):
            rows.append(dict(zip(ROW_KEYS, [cells[0], cells[1], num(cells[2], int), num(cells[3], int),
                                            num(cells[4], float), num(cells[5], float)])))
    record = {
        "command": m["command"], "epochs": int(m["epochs"]), "machine": m["machine"],
        "torch_threads": int(m["threads"]), "description": m["description"], "rows": rows,
    }
    if render_markdown(record) != text:
        raise ValueError("efficiency.md: the table rendered back from the parsed numbers differs from the file")
    return record


def write(record: dict, md_path: str, json_path: str) -> None:
    for path, text in ((md_path, render_markdown(record)), (json_path, render_json(record))):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text)
        print(f"wrote {path}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--data", default="data/prepared/ml-1m_clean")
    parser.add_argument("--passes", type=int, default=3, help="evaluation passes after training (median kept)")
    parser.add_argument("--out", default="results/efficiency.md")
    parser.add_argument("--json", default="results/efficiency.json")
    parser.add_argument("--from-markdown", metavar="MD",
                        help="measure nothing: parse this efficiency.md and write --json (and --out) from it")
    args = parser.parse_args()

    if args.from_markdown:
        write(parse_markdown(Path(args.from_markdown).read_text()), args.out, args.json)
        return

    rows = []
    for model, name in MODELS + ML1M_ONLY:
        m = measure(model, args.epochs, args.data, args.passes)
        # kept as shown in the table: whole MB, hundredths of a second
        rows.append({"dataset": "ml-1m", "model": name, "n_parameters": int(m["n_parameters"]),
                     "peak_rss_mb": int(round(m["peak_rss_mb"])), "seconds_per_epoch": round(m["seconds_per_epoch"], 2),
                     "seconds_per_eval": round(m["seconds_per_eval"], 2)})
        print(f"ml-1m {name}: {m}", flush=True)
    for dataset, n_users, n_items in DATASETS[1:]:
        for model, name in MODELS:
            rows.append({"dataset": dataset, "model": name, "n_parameters": parameter_count(model, n_users, n_items),
                         "peak_rss_mb": None, "seconds_per_epoch": None, "seconds_per_eval": None})
    record = {
        "command": f"python benchmarks/bench_efficiency.py --epochs {args.epochs} --passes {args.passes}",
        "epochs": args.epochs,
        "machine": platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "description": DESCRIPTION,
        "rows": rows,
    }
    write(record, args.out, args.json)
    print(render_markdown(record))


if __name__ == "__main__":
    main()
