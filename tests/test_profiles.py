"""Cluster profiles: a dry run through the official executor plugins plans the default DAG with
the resources every rule declares, and a GPU on the training rules.

``snakemake --profile workflow/profiles/<name> -n`` only plans: nothing is submitted, so no
SLURM controller or Kubernetes API is needed.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
TRAINING_RULES = {"train", "tune"}  # embed exports a trained model: no GPU, one thread


def planned_jobs(*args: str) -> list[dict]:
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "-F", *args],
        cwd=ROOT, capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    jobs, current = [], None
    for line in proc.stdout.splitlines():
        if m := re.match(r"^rule (\w+):$", line):
            current = {"rule": m.group(1), "resources": {}, "threads": 1}
            jobs.append(current)
        elif current is not None and (m := re.match(r"^\s+resources: (.*)$", line)):
            current["resources"] = dict(kv.split("=", 1) for kv in m.group(1).split(", "))
        elif current is not None and (m := re.match(r"^\s+threads: (\d+)$", line)):
            current["threads"] = int(m.group(1))
        elif current is not None and (m := re.match(r"^\s+wildcards: (.*)$", line)):
            current["wildcards"] = dict(kv.split("=", 1) for kv in m.group(1).split(", "))
    assert jobs, proc.stdout[-3000:]
    return jobs


@pytest.mark.parametrize("profile", ["slurm", "kubernetes"])
def test_cluster_profile_plans_the_dag_with_gpus_on_training_rules(profile):
    jobs = planned_jobs("--profile", f"workflow/profiles/{profile}")
    rules = {job["rule"] for job in jobs}
    assert {"train", "embed", "aggregate"} <= rules, rules
    for job in jobs:
        if job["rule"] == "all":
            continue
        res = job["resources"]
        assert int(res["mem_mb"]) > 0 and int(res["runtime"]) > 0, job
        if job["rule"] in TRAINING_RULES:
            assert res.get("gpu") == "1", job  # the profile turns training.device to auto
        else:
            assert res.get("gpu", "0") == "0", job


def test_local_default_profile_asks_for_no_gpu():
    """params.yaml trains on the CPU (training.device: cpu): no rule asks for a GPU; each
    training job takes its variant's threads (models.<variant>.threads, else training.threads)."""
    from pipeline.config import load_params
    from pipeline.plan import run_threads

    params = load_params(ROOT / "params.yaml")
    jobs = planned_jobs("--cores", "2")
    train = [j for j in jobs if j["rule"] in TRAINING_RULES]
    assert train and all(j["resources"].get("gpu") == "0" for j in train)
    for job in train:
        variant = job["wildcards"]["model"]
        assert job["threads"] == run_threads(params, variant), job
    assert {j["threads"] for j in train} == {1, 2}


def test_make_reproduce_uses_the_default_profile_and_resumes():
    """Snakemake 9 reads workflow/profiles/default only when asked (--workflow-profile): the
    Makefile's command asks, and a dry run of exactly that command shows the profile in effect
    (its `printshellcmds` prints every job's command line, which a run without it does not)."""
    made = subprocess.run(["make", "-n", "reproduce"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    command = re.search(r"(snakemake --workflow-profile (\S+) --cores \d+)'", made)
    assert command, made
    assert "--forcerun" not in made.split("reproduce-all")[0]  # incremental: finished runs are kept
    profile = yaml.safe_load((ROOT / command.group(2) / "config.yaml").read_text())
    assert profile["rerun-incomplete"] and profile["keep-incomplete"] and profile["printshellcmds"]

    with_profile = subprocess.run([sys.executable, "-m", *command.group(1).split(), "-n", "-F"],
                                  cwd=ROOT, capture_output=True, text=True)
    assert with_profile.returncode == 0, with_profile.stderr[-3000:]
    out = with_profile.stdout + with_profile.stderr
    assert f"Using workflow specific profile {command.group(2)}" in out
    assert re.search(r"^Shell command: python -m pipeline train ", out, re.M)

    without = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "2", "-n", "-F"],
                             cwd=ROOT, capture_output=True, text=True)
    assert without.returncode == 0 and not re.search(r"^Shell command: ", without.stdout + without.stderr, re.M)


def test_snakemake_reads_params_as_the_stages_do(tmp_path):
    """PIPELINE_PARAMS unset or empty means params.yaml for Snakemake as for the CLI, and a YAML
    syntax error stops Snakemake with the file, line and column."""
    import os

    bad = tmp_path / "params.yaml"
    bad.write_text("training:\n  epochs: [1,\n  device: cpu\n")
    env = {**os.environ, "PIPELINE_PARAMS": str(bad)}
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--cores", "1"], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    assert proc.returncode != 0
    assert re.search(rf"{re.escape(str(bad))}: YAML syntax error at line \d+, column \d+", proc.stdout + proc.stderr)

    empty = subprocess.run([sys.executable, "-m", "snakemake", "-n", "-F", "--cores", "1"], cwd=ROOT,
                           env={**os.environ, "PIPELINE_PARAMS": ""}, capture_output=True, text=True)
    assert empty.returncode == 0, empty.stderr[-2000:]
    assert "source=diffrec-ml-1m-clean" in empty.stdout + empty.stderr  # params.yaml's plan


def test_make_results_plans_the_aggregate_stage_alone():
    """`make results` regenerates results/ from git's files: a dry run of its command plans one
    aggregate job and nothing upstream (no training, no per-user table)."""
    made = subprocess.run(["make", "-n", "results"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    command = re.search(r"^(snakemake .*)$", made, re.M)
    assert command, made
    proc = subprocess.run([sys.executable, "-m", *command.group(1).split(), "-n"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rules = re.findall(r"^(?:local)?rule (\w+):$", proc.stdout, re.M)
    assert rules == ["aggregate"], rules
