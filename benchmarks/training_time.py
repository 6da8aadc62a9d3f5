"""Training-time table of the DAG's own runs: seconds per epoch and per evaluation pass, epochs to
the best validation epoch, per model and setting; and the grid
of every tuned baseline with the setting the tune stage selected.

    python benchmarks/training_time.py [--out results/training_time.md] [--tuning results/tuning.md]

Reads what the train stage recorded while the runs happened: ``logs/timing/<split>_<model>_seed<N>.json``
(wall-clock seconds; written beside, not inside, the tracked run folders because timings differ
from run to run) and ``runs/<split>/<model>/seed<N>/metrics.json`` (best epoch, epochs trained,
parameters). A tuned baseline's first-seed run is its grid run, so its timing file is that grid
point's. Timings are of this machine as the runs happened (two or more jobs at a time, each with its
variant's threads), so they carry the load of the other jobs; they are a
measurement, written by this script, not by the DAG.

Both tables are rewritten from what is on this machine; a (split, model) whose runs (or grid) are
not here, e.g. DVC outputs made on another machine and not checked out, keeps its rows from the
file as it was, so regenerating after new runs does not drop the old ones.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_floor import schedule  # noqa: E402
from pipeline.config import display_names, load_params  # noqa: E402
from pipeline.plan import RUN_DIR, embed_jobs, embed_source, grid_keys, is_tuned, run_threads, trained_runs, tune_runs  # noqa: E402


HEADER = ("split", "model", "parameters", "threads", "s / epoch", "s / evaluation", "epochs to best", "epochs trained",
          "seeds", "min / run")


def collect(params: dict) -> list[dict]:
    rows: dict[tuple[str, str], dict] = {}
    for split, variant, seed in trained_runs(params):
        run = ROOT / "runs" / split / variant / f"seed{seed}" / "metrics.json"
        timing = ROOT / "logs" / "timing" / f"{split}_{variant}_seed{seed}.json"
        if not run.exists() or not timing.exists():
            continue
        m, t = json.loads(run.read_text()), json.loads(timing.read_text())
        row = rows.setdefault((split, variant), {"split": split, "variant": variant, "epoch": [], "eval": [], "best": [],
                                                 "trained": [], "threads": [], "params": m.get("n_parameters")})
        row["threads"].append(run_thread_count(t, params, variant))
        if t.get("seconds_per_epoch") is not None:
            row["epoch"].append(t["seconds_per_epoch"])
        if t.get("seconds_per_eval") is not None:
            row["eval"].append(t["seconds_per_eval"])
        row["best"].append(m["best_epoch"])
        row["trained"].append(m["epochs_trained"])
    # the embedding stages: LightGCN (the latent models' clusters) and HGCF (HDRM's stage 1, a
    # cost HDRM pays on top of its own runs), one run per split with embeddings.seed
    for split, variant in embed_jobs(params):
        run = ROOT / "data" / "embeddings" / split / variant / "metrics.json"
        timing = ROOT / "logs" / "timing" / f"{split}_{variant}-embeddings.json"
        if not run.exists() or not timing.exists():
            continue
        m, t = json.loads(run.read_text()), json.loads(timing.read_text())
        rows[(split, f"{variant} stage")] = {
            "split": split, "variant": variant, "label": f"{display_names(params, variant)[0]} (embedding stage)",
            "epoch": [t["seconds_per_epoch"]], "eval": [t["seconds_per_eval"]], "best": [m["best_epoch"]],
            "trained": [m["epochs_trained"]], "threads": [run_thread_count(t, params, variant)], "params": m.get("n_parameters"),
        }
    return list(rows.values())


def run_thread_count(timing: dict, params: dict, variant: str) -> int:
    """The torch threads a run used: its timing file's (written by the trainer), else, for a file
    written before the trainer recorded it, the variant's count in params.yaml."""
    return int(timing.get("threads", run_threads(params, variant)))


def threads_cell(counts: list[int]) -> str:
    """The threads of a row's runs: one count, or each count seen where its seeds differ."""
    return "/".join(str(n) for n in sorted(set(counts))) or "–"


def _mean(values: list[float], fmt: str) -> str:
    return format(statistics.mean(values), fmt) if values else "–"


def _median(values: list[float], fmt: str) -> str:
    return format(statistics.median(values), fmt) if values else "–"


def with_run_minutes(line: str, folders: dict[tuple[str, str], list[Path]]) -> str:
    """A table line with its *min / run* cell added: each of its (split, model)'s runs' epochs and
    evaluations (the ``history.csv`` in ``folders[(split, model)]``) times the line's seconds per
    epoch and per evaluation, the median over runs; a line that has the cell already is returned
    as it is (a row kept from an earlier file)."""
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    if len(cells) == len(HEADER):
        return line
    number = lambda cell: 0.0 if cell == "–" else float(cell)  # noqa: E731
    per_epoch, per_eval = number(cells[4]), number(cells[5])
    runs = [schedule(folder) for folder in folders.get((cells[0], cells[1]), [])]
    minutes = [(epochs * per_epoch + evaluations * per_eval) / 60 for epochs, evaluations in filter(None, runs)]
    return line + f" {_median(minutes, '.1f')} |"


def kept_rows(path: Path, present: set[tuple[str, str]]) -> dict[tuple[str, str], list[str]]:
    """The table lines of ``path`` (an earlier output) by (split, model name), for the pairs not in
    ``present``: rows of runs this machine does not hold, kept as they were."""
    out: dict[tuple[str, str], list[str]] = {}
    if not path.exists():
        return out
    for line in path.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not line.startswith("| ") or cells[0] in ("split", "---"):
            continue
        if (cells[0], cells[1]) not in present:
            out.setdefault((cells[0], cells[1]), []).append(line)
    return out


def _merged(order: list[tuple[str, str]], new: dict[tuple[str, str], list[str]],
            kept: dict[tuple[str, str], list[str]]) -> list[str]:
    """Lines in the plan's (split, model) order: this machine's where it has them, else the kept ones."""
    lines = []
    for key in dict.fromkeys(order):
        lines += new.get(key) or kept.get(key, [])
    return lines


def render(params: dict, rows: list[dict], previous: Path | None = None) -> str:
    lines = [
        "# Training time of the DAG's runs",
        "",
        "Written by `python benchmarks/training_time.py` from `logs/timing/*.json` and the runs' `metrics.json` "
        "(seconds: the median over seeds, so one run slowed or paused by its host does not move a row; epochs: the "
        "mean). Wall-clock seconds on the 2-core machine as the runs happened, two or more jobs sharing "
        "the cores (see results/README.md), so they overstate a run alone (`efficiency.md`); *threads* = torch threads of the runs (as recorded in their timing files; `models.<variant>.threads`, else `training.threads`, when the runs were made). "
        "*min / run* = each run's epochs and evaluations (its `history.csv`) times the row's s / epoch and s / "
        "evaluation, the median over seeds (start-up left out). Epochs to best = the validation-selected epoch (evaluation every "
        f"{params['training']['eval_every']} epochs, stop after {params['training']['patience']} without a new best).",
        "",
        "| " + " | ".join(HEADER) + " |",
        "|---|---|" + "---:|" * (len(HEADER) - 2),
    ]
    new: dict[tuple[str, str], list[str]] = {}
    for r in rows:
        name = r.get("label") or display_names(params, r["variant"])[0]
        params_txt = f"{r['params']:,}" if isinstance(r["params"], int) else "–"
        new[(r["split"], name)] = [
            f"| {r['split']} | {name} | {params_txt} | {threads_cell(r['threads'])} | {_median(r['epoch'], '.2f')} | "
            f"{_median(r['eval'], '.2f')} | {_mean(r['best'], '.0f')} | {_mean(r['trained'], '.0f')} | {len(r['best'])} |"
        ]
    order = [(s, display_names(params, v)[0]) for s, v, _ in trained_runs(params)]
    order += [(s, f"{display_names(params, v)[0]} (embedding stage)") for s, v in embed_jobs(params)]
    folders: dict[tuple[str, str], list[Path]] = {}
    for split, variant, seed in trained_runs(params):
        folders.setdefault((split, display_names(params, variant)[0]), []).append(ROOT / RUN_DIR.format(split=split, model=variant, seed=seed))
    for split, variant in embed_jobs(params):
        source = embed_source(params, split, variant)
        folders[(split, f"{display_names(params, variant)[0]} (embedding stage)")] = [ROOT / RUN_DIR.format(**source._asdict())]
    kept = kept_rows(previous, set(new)) if previous else {}
    rows = [with_run_minutes(line, folders) for line in _merged(order, new, kept)]
    return "\n".join(lines + rows) + "\n"


def render_tuning(params: dict, previous: Path | None = None) -> str:
    """Every tuned variant's grid.csv (runs/<split>/<variant>/tuning/, a DVC output) as Markdown."""
    import polars as pl

    metric = params["training"]["select_metric"]
    lines = [
        "# Hyperparameter grids of the tuned models",
        "",
        "Written by `python benchmarks/training_time.py` from `runs/<split>/<variant>/tuning/grid.csv` (the tune "
        f"stage's output). Each point trained with seed {', '.join(str(s) for s in sorted({s for _, _, s in tune_runs(params)}))}; selected = highest validation "
        f"{metric} (first point on ties); test {metric} is shown for information only and played no part.",
        "",
        f"| split | model | setting | best epoch | valid {metric} | test {metric} | selected |",
        "|---|---|---|---:|---:|---:|:---:|",
    ]
    seen = dict.fromkeys((s, v) for s, v, _ in trained_runs(params) if is_tuned(params, v, s))
    new: dict[tuple[str, str], list[str]] = {}
    for split, variant in seen:
        path = ROOT / "runs" / split / variant / "tuning" / "grid.csv"
        if not path.exists():
            continue
        name, _ = display_names(params, variant)
        keys = grid_keys(params, variant, split)
        for row in pl.read_csv(path, schema_overrides={k: pl.String for k in keys}).iter_rows(named=True):
            setting = ", ".join(f"{k} = {row[k]}" for k in keys if row[k] is not None)  # None: its sub-grid leaves it
            new.setdefault((split, name), []).append(
                f"| {split} | {name} | {setting} | {row['best_epoch']} | {row[f'valid_{metric}']:.4f} | "
                f"{row[f'test_{metric}']:.4f} | {'yes' if row['selected'] else ''} |")
    order = [(s, display_names(params, v)[0]) for s, v in seen]
    kept = kept_rows(previous, set(new)) if previous else {}
    return "\n".join(lines + _merged(order, new, kept)) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="results/training_time.md")
    parser.add_argument("--tuning", default="results/tuning.md")
    args = parser.parse_args()
    params = load_params(ROOT / "params.yaml")
    text = render(params, collect(params), Path(args.out))
    Path(args.out).write_text(text)
    print(text)
    tuning = render_tuning(params, Path(args.tuning))
    Path(args.tuning).write_text(tuning)
    print(tuning)


if __name__ == "__main__":
    main()
