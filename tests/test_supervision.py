"""A DAG run that is stopped stops its jobs (pipeline/supervision.py), with Snakemake itself.

A two-job toy workflow whose jobs call the same hook as ``python -m pipeline``: SIGINT to
snakemake alone ends the jobs at once (Snakemake's local executor would wait for them), and a
SIGKILLed snakemake leaves no job running (the jobs notice within a poll).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from pipeline import supervision

ROOT = Path(__file__).resolve().parents[1]
GRACE_SECONDS = 20  # far above a poll (supervision.POLL_SECONDS) plus process start-up

SNAKEFILE = """
from pipeline.supervision import stop_jobs_with_runner
stop_jobs_with_runner()

rule all:
    input: "a.done", "b.done"

rule job:
    output: "{{name}}.done"
    shell: "{python} -c 'from pipeline.supervision import exit_with_supervisor; exit_with_supervisor(\\"job\\"); "
           "import pathlib, time; pathlib.Path(\\"{{wildcards.name}}.started\\").touch(); time.sleep(300)'; touch {{output}}"
"""


@pytest.fixture
def workflows():
    """Start toy workflows; whatever a failing test leaves running is killed afterwards."""
    started: list[subprocess.Popen] = []
    yield lambda folder: started.append(start_workflow(folder)) or started[-1]
    for proc in started:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def start_workflow(folder: Path) -> subprocess.Popen:
    (folder / "Snakefile").write_text(SNAKEFILE.format(python=sys.executable))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "snakemake", "--cores", "2"], cwd=folder, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # as from a terminal
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while not all((folder / f"{name}.started").exists() for name in "ab"):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0]
        time.sleep(0.2)
    return proc


def job_processes(folder: Path) -> list[psutil.Process]:
    jobs = []
    for process in psutil.process_iter(["cmdline", "cwd"]):
        with contextlib.suppress(psutil.Error):  # a process that ended while listed
            if process.info["cwd"] == str(folder) and "exit_with_supervisor" in " ".join(process.info["cmdline"] or []):
                jobs.append(process)
    return jobs


def wait_until_gone(folder: Path) -> float:
    start = time.monotonic()
    while job_processes(folder):
        if time.monotonic() - start > GRACE_SECONDS:
            for process in job_processes(folder):
                process.kill()
            pytest.fail(f"jobs still running {GRACE_SECONDS}s after snakemake was stopped")
        time.sleep(0.2)
    return time.monotonic() - start


def test_sigint_to_snakemake_stops_its_jobs(tmp_path, workflows):
    proc = workflows(tmp_path)
    assert len(job_processes(tmp_path)) >= 2
    proc.send_signal(signal.SIGINT)
    out = proc.communicate(timeout=GRACE_SECONDS)[0]
    assert proc.returncode != 0
    assert "pipeline: SIGINT: stopped" in out
    wait_until_gone(tmp_path)
    assert not list(tmp_path.glob("*.done"))


def test_jobs_of_a_killed_snakemake_stop(tmp_path, workflows):
    proc = workflows(tmp_path)
    proc.kill()
    proc.wait()
    waited = wait_until_gone(tmp_path)
    assert waited < GRACE_SECONDS
    assert not list(tmp_path.glob("*.done"))


def test_no_supervisor_means_no_watch(monkeypatch):
    """Run by hand, by DVC or on a cluster node (another host): nothing is watched."""
    monkeypatch.delenv(supervision.SUPERVISOR_ENV, raising=False)
    assert supervision._supervisor_from_env() is None
    me = psutil.Process()
    monkeypatch.setenv(supervision.SUPERVISOR_ENV, f"another-host:{me.pid}:{me.create_time()!r}")
    assert supervision._supervisor_from_env() is None
    monkeypatch.setenv(supervision.SUPERVISOR_ENV, f"{supervision.socket.gethostname()}:{me.pid}:0.0")  # pid reused
    assert supervision._supervisor_from_env() is None
    monkeypatch.setenv(supervision.SUPERVISOR_ENV, supervision._identity(me))
    assert supervision._supervisor_from_env().pid == me.pid
