"""Snakemake and DVC must describe the same DAG: same commands, inputs and outputs.

The Snakemake side comes from a forced dry run (``snakemake -n -F -p``), the DVC side from
DVC's own index of ``dvc.yaml``. A DVC folder dependency/output stands for the files under it
(DVC hashes folders; Snakemake lists files), so "covered" means equal or inside.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def snakemake_jobs(env: dict | None = None) -> dict[str, dict]:
    out = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "-F", "-p", "--cores", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        check=True,
    ).stdout
    jobs, current = {}, {}
    for line in out.splitlines():
        if m := re.match(r"^rule (\w+):$", line):
            current = {"rule": m.group(1), "input": [], "output": []}
        elif m := re.match(r"^\s+(input|output): (.*)$", line):
            current[m.group(1)] = [p.strip() for p in m.group(2).split(",")]
        elif m := re.match(r"^\s+priority: (.*)$", line):
            current["priority"] = float(m.group(1))
        elif line.startswith("Shell command: "):
            cmd = line[len("Shell command: ") :].strip()
            if cmd != "None":  # target-only rules such as `all`
                jobs[cmd] = current
    return jobs


def dvc_stages() -> dict[str, dict]:
    from dvc.repo import Repo

    with Repo(str(ROOT)) as repo:
        stages = {}
        for stage in repo.index.stages:
            deps = [str(d) for d in stage.deps if not str(d).endswith("params.yaml")]
            stages[" ".join(stage.cmd.split())] = {
                "name": stage.addressing,
                "deps": deps,
                "outs": [str(o) for o in stage.outs],
            }
        return stages


def covered(path: str, by: list[str]) -> bool:
    return any(path == b or path.startswith(b.rstrip("/") + "/") for b in by)


@pytest.fixture(scope="module")
def both():
    return snakemake_jobs(), dvc_stages()


def test_same_commands(both):
    smk, dvc = both
    assert sorted(smk) == sorted(dvc)
    assert len(dvc) >= 4  # download, prepare, train, aggregate at the least


def test_same_inputs_and_outputs(both):
    smk, dvc = both
    for cmd, job in smk.items():
        stage = dvc[cmd]
        for path in job["input"]:
            assert covered(path, stage["deps"]), f"{stage['name']}: Snakemake input {path} is not a DVC dep"
        for dep in stage["deps"]:
            assert any(covered(p, [dep]) for p in job["input"]), f"{stage['name']}: DVC dep {dep} is not a Snakemake input"
        for path in job["output"]:
            assert covered(path, stage["outs"]), f"{stage['name']}: Snakemake output {path} is not a DVC out"
        for out in stage["outs"]:
            assert any(covered(p, [out]) for p in job["output"]), f"{stage['name']}: DVC out {out} is not a Snakemake output"


def test_every_stage_is_a_pipeline_command(both):
    _, dvc = both
    for cmd in dvc:
        assert cmd.startswith("python -m pipeline "), cmd


def test_snakemake_orders_the_jobs_by_the_plans_priorities(both):
    """Every train, tune, embed, cluster and import job carries pipeline.plan.job_priorities's value
    for the measured seconds in workflow/job_seconds.json (0 printed as none)."""
    from pipeline import plan
    from pipeline.config import load_params

    priorities = plan.job_priorities(load_params(), plan.read_job_seconds())
    jobs = both[0]
    hgcf = next(job for cmd, job in jobs.items() if "--split ml-1m_noisy --model hgcf --seed 1 " in cmd and job["rule"] == "train")
    assert hgcf.get("priority", 0.0) == priorities["train/ml-1m_noisy/hgcf/1"] > 0
    shown = [job.get("priority", 0.0) for job in jobs.values() if job["rule"] in ("train", "tune", "embed", "cluster", "import_embeddings")]
    assert sorted(shown) == sorted(priorities.values())
