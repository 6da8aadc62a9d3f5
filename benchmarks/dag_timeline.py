"""Where a DAG run's wall time went: its jobs' start and finish times read from Snakemake's log.

    python benchmarks/dag_timeline.py [.snakemake/log/<run>.snakemake.log ...] [--cores 2] [--alone]

Reads the log Snakemake writes of every run (the newest one under ``.snakemake/log/`` when no path
is given; several: the segments of one run resumed after interruptions, their walls added up): each job's start (the time stamp before its ``rule``/``localrule`` block), its rule,
wildcards and threads (``threads:``, 1 where the block names none), and its finish (``Finished
jobid``). Prints, for a `make reproduce` that happened:

* **the run**: wall seconds from the first start to the last finish, the jobs, their job-seconds
  and core-seconds (seconds x threads), and the **packing**: core-seconds / (cores x wall), the
  share of the cores the jobs kept busy. Below 100 %: cores idle while the stages' order let
  fewer jobs run than cores (a grid that must end before its seeds start, the run's tail);
* **by model** (train and tune jobs by their ``model`` wildcard, other rules by name): jobs,
  job-seconds and their share, and the seconds of a training epoch in the run (the median of the
  ``seconds_per_epoch`` the train stage wrote to ``logs/timing/`` for the run's jobs), to set
  beside the same model's epoch measured alone: with ``--alone``, ``benchmarks/bench_floor.py``'s
  measurement of each model (on the split of its first job, with its own threads, nothing else
  of the DAG running; about 10 minutes for the first table), and the ratio of the two: what
  sharing the machine with the other jobs cost that model.

It reads and prints; with ``--job-seconds FILE`` it also writes each finished job's seconds to
FILE (``workflow/job_seconds.json`` orders the DAG's jobs: ``pipeline.plan.job_priorities``). A
job still running when the log ends (an interrupted run) is counted up to the log's last time
stamp and flagged.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from datetime import datetime
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_floor import _s  # noqa: E402  (the same two-decimal figure or a dash)
from pipeline.plan import JOB_SECONDS, ORDERED_RULES, wildcards_job_key  # noqa: E402
LOG_DIR = ROOT / ".snakemake" / "log"
TIMING_DIR = ROOT / "logs" / "timing"

STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]$")  # [Sun Dec  6 14:34:45 2026]
RULE = re.compile(r"^(?:local)?rule (\w+):$")
FIELD = re.compile(r"^\s+(jobid|wildcards|threads): (.*)$")
FINISHED = re.compile(r"^Finished jobid: (\d+)")
PER_MODEL_RULES = {"train", "tune"}  # rules whose jobs are grouped by their model wildcard


class Job(NamedTuple):
    rule: str
    wildcards: dict[str, str]
    threads: int
    start: datetime
    finish: datetime
    finished: bool  # False: still running when the log ends

    @property
    def seconds(self) -> float:
        return (self.finish - self.start).total_seconds()

    @property
    def group(self) -> str:
        return self.wildcards.get("model", self.rule) if self.rule in PER_MODEL_RULES else self.rule

    def timing_files(self, folder: Path) -> list[Path]:
        """The ``logs/timing`` files the job wrote (train: its run's; tune: its grid points'),
        those written while it ran (a file of an earlier run is not this job's)."""
        w = self.wildcards
        if self.rule == "train":
            paths = [folder / f"{w['split']}_{w['model']}_seed{w['seed']}.json"]
        elif self.rule == "tune":
            paths = sorted(folder.glob(f"{w['split']}_{w['model']}_tune_point*.json"))
        else:
            return []
        # the log's stamps are whole local seconds
        written = lambda p: self.start <= datetime.fromtimestamp(int(p.stat().st_mtime)) <= self.finish  # noqa: E731
        return [p for p in paths if p.exists() and written(p)]


def parse(lines: list[str]) -> list[Job]:
    """The jobs of a Snakemake log (see the module docstring)."""
    stamp = None  # the latest time stamp read: a job's start, a finish, the log's end
    opened: dict[int, dict] = {}
    jobs: list[Job] = []
    block: dict | None = None
    for line in lines:
        line = line.rstrip("\n")
        if m := STAMP.match(line):
            stamp = datetime.strptime(m.group(1), "%a %b %d %H:%M:%S %Y")
            block = None
        elif m := RULE.match(line):
            block = {"rule": m.group(1), "start": stamp, "wildcards": {}, "threads": 1}
        elif block is not None and (m := FIELD.match(line)):
            key, value = m.groups()
            if key == "jobid":
                opened[int(value)] = block
            elif key == "wildcards":
                block["wildcards"] = dict(part.split("=", 1) for part in value.split(", "))
            else:
                block["threads"] = int(value)
        elif m := FINISHED.match(line):
            job = opened.pop(int(m.group(1)), None)
            if job is not None:
                jobs.append(Job(job["rule"], job["wildcards"], job["threads"], job["start"], stamp, True))
    jobs += [Job(j["rule"], j["wildcards"], j["threads"], j["start"], stamp, False) for j in opened.values()]
    return sorted(jobs, key=lambda j: j.start)


def dag_epochs(jobs: list[Job], folder: Path) -> dict[str, list[float]]:
    """Each model's ``seconds_per_epoch`` of the run's train and tune jobs (``logs/timing``)."""
    out: dict[str, list[float]] = {}
    for job in jobs:
        for path in job.timing_files(folder):
            seconds = json.loads(path.read_text()).get("seconds_per_epoch")
            if seconds:
                out.setdefault(job.group, []).append(seconds)
    return out


def alone_epochs(jobs: list[Job]) -> dict[str, float]:
    """Each trained model's epoch measured alone (``bench_floor.measure``, one pass)."""
    from benchmarks.bench_floor import measure, not_measured
    from pipeline import plan
    from pipeline.config import load_params

    params = load_params()
    out: dict[str, float] = {}
    for job in jobs:
        model, split = job.wildcards.get("model"), job.wildcards.get("split")
        if job.rule not in PER_MODEL_RULES or model in out or model not in params["models"]:
            continue
        if not_measured(params, split, model) is None:
            seconds = measure(model, split, plan.run_threads(params, model), 1)["epoch_s"]
            if seconds:
                out[model] = seconds
    return out


def report(segments: list[list[Job]], cores: int, timing: Path = TIMING_DIR, alone: dict[str, float] | None = None) -> str:
    """The printout for the jobs of one run's logs (``segments``: one list of jobs per log)."""
    segments = [jobs for jobs in segments if jobs]
    if not segments:
        return "no job in the log"
    jobs = [job for segment in segments for job in segment]
    spans = [(min(j.start for j in s), max(j.finish for j in s)) for s in segments]
    wall = sum((end - start).total_seconds() for start, end in spans)
    job_s = sum(j.seconds for j in jobs)
    core_s = sum(j.seconds * min(j.threads, cores) for j in jobs)
    lines = [f"# {start:%Y-%m-%d %H:%M:%S} to {end:%H:%M:%S}" for start, end in spans]
    lines += [f"- {len(jobs)} jobs on {cores} cores" + (f" in {len(spans)} segments" if len(spans) > 1 else ""),
              f"- wall {wall:,.0f} s ({wall / 60:.1f} min); {job_s:,.0f} job-seconds, {core_s:,.0f} core-seconds",
              f"- packing: {core_s:,.0f} / ({cores} x {wall:,.0f}) = {100 * core_s / (cores * wall):.1f} % of the cores busy; "
              f"{cores * wall - core_s:,.0f} core-seconds idle"]
    running = [j for j in jobs if not j.finished]
    if running:
        lines.append(f"- {len(running)} job(s) still running when the log ends (counted up to its last time stamp): "
                     + ", ".join(f"{j.rule} {j.wildcards}" for j in running))
    groups: dict[str, list[Job]] = {}
    for job in jobs:
        groups.setdefault(job.group, []).append(job)
    group_seconds = {group: sum(j.seconds for j in members) for group, members in groups.items()}
    epochs = dag_epochs(jobs, timing)
    alone = alone or {}
    lines += ["", "| model (or rule) | jobs | job-seconds | share | s / epoch in the run (median) | runs timed "
                  "| s / epoch alone | in the run / alone |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for group, seconds in sorted(group_seconds.items(), key=lambda kv: -kv[1]):
        e = epochs.get(group, [])
        in_run = statistics.median(e) if e else None
        solo = alone.get(group)
        lines.append(f"| {group} | {len(groups[group])} | {seconds:,.0f} | {100 * seconds / job_s:.1f} % | "
                     f"{_s(in_run)} | {len(e)} | {_s(solo)} | {_s(in_run / solo if in_run and solo else None)} |")
    if alone:
        weights = [(group_seconds[g], epochs[g], alone[g]) for g in alone if g in epochs]
        total = sum(w for w, _, _ in weights)
        lines.append(f"\n- job-seconds-weighted mean of in the run / alone: "
                     f"{sum(w * statistics.median(e) / a for w, e, a in weights) / total:.2f} over {len(weights)} models")
    return "\n".join(lines)


def newest_log(folder: Path = LOG_DIR) -> Path:
    logs = sorted(folder.glob("*.snakemake.log"), key=lambda p: p.stat().st_mtime)
    if not logs:
        raise SystemExit(f"no Snakemake log under {folder}: run the DAG first, or give a log's path")
    return logs[-1]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("logs", nargs="*", type=Path,
                        help="Snakemake logs of one run, one per segment (default: the newest in .snakemake/log)")
    parser.add_argument("--cores", type=int, default=2, help="the cores the run had (make reproduce CORES=...)")
    parser.add_argument("--job-seconds", type=Path, metavar="JSON",
                        help=f"also write each finished job's seconds there, by pipeline.plan.job_key (the scheduling "
                             f"priorities read {JOB_SECONDS}); jobs in an existing file that the logs lack are kept")
    parser.add_argument("--alone", action="store_true",
                        help="also measure each trained model's epoch alone (bench_floor) and print the ratio")
    args = parser.parse_args(argv)
    if args.cores < 1:
        parser.error("--cores must be at least 1")
    paths = args.logs or [newest_log()]
    for path in paths:
        if not path.is_file():
            raise SystemExit(f"{path}: no such log")
    # the timing files of the checkout the first log belongs to (<checkout>/.snakemake/log/<run>.log)
    first = paths[0].resolve()
    checkout = first.parents[2] if first.parent.parent.name == ".snakemake" else ROOT
    segments = [parse(path.read_text().splitlines()) for path in paths]
    print("\n".join(f"# {path}" for path in paths))
    alone = alone_epochs([job for segment in segments for job in segment]) if args.alone else None
    print(report(segments, args.cores, checkout / "logs" / "timing", alone))
    if args.job_seconds:
        write_job_seconds(args.job_seconds, [job for segment in segments for job in segment])


def job_seconds(jobs: list[Job]) -> dict[str, float]:
    """{pipeline.plan.job_key: seconds} of the finished jobs of the rules that have a priority."""
    return {wildcards_job_key(job.rule, job.wildcards): round(job.seconds)
            for job in jobs if job.finished and job.rule in ORDERED_RULES}


def write_job_seconds(path: Path, jobs: list[Job]) -> None:
    old = json.loads(path.read_text()) if path.is_file() else {}
    merged = {**old, **job_seconds(jobs)}
    path.write_text(json.dumps(dict(sorted(merged.items())), indent=1) + "\n")
    print(f"wrote {path}: {len(merged)} jobs ({len(merged) - len(old)} new)")


if __name__ == "__main__":
    main()
