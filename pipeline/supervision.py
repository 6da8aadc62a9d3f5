"""Stopping a DAG run stops its jobs; a job outlives no DAG runner.

Snakemake's local executor, sent SIGINT on its own (``kill -INT``, a supervisor), waits for its
running jobs to finish; killed with SIGKILL it leaves them running as orphans, and a restarted
DAG then starts the same runs a second time beside them, both writing one run folder. (SIGTERM
keeps Snakemake's own meaning: finish the running jobs, start no new one, exit.) Two small
pieces close both gaps:

- :func:`stop_jobs_with_runner`, called by the Snakefile in the runner's process: SIGINT to the
  runner first sends SIGTERM to every process it started, then lets Snakemake handle the signal
  as usual (it cancels, keeps incomplete outputs and exits). It also exports
  ``PIPELINE_SUPERVISOR`` (host, pid and start time of the runner) to the jobs.
- :func:`exit_with_supervisor`, called by ``python -m pipeline``: when ``PIPELINE_SUPERVISOR``
  names a process of this host that is alive at start, a daemon thread interrupts the stage
  (KeyboardInterrupt: atomic writes clean up) as soon as that process is gone. On another host
  (a cluster job) or without the variable (DVC, a command typed by hand) it does nothing.

A stopped training run resumes from its last checkpoint (``resume.pt``) when the DAG reruns.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import threading

import psutil

SUPERVISOR_ENV = "PIPELINE_SUPERVISOR"
POLL_SECONDS = 2.0  # how soon an orphaned job notices that its runner is gone


def _identity(process: psutil.Process) -> str:
    return f"{socket.gethostname()}:{process.pid}:{process.create_time()!r}"


def stop_jobs_with_runner() -> None:
    """In the DAG runner's process: SIGINT stops the jobs too; export the runner's identity.
    Only the main thread can install signal handlers; elsewhere it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        return
    runner = psutil.Process()
    os.environ[SUPERVISOR_ENV] = _identity(runner)

    previous = signal.getsignal(signal.SIGINT)

    def handler(signum, frame):
        jobs = runner.children(recursive=True)
        for job in jobs:
            with contextlib.suppress(psutil.NoSuchProcess):  # already ended on its own
                job.terminate()
        if jobs:
            print(f"pipeline: SIGINT: stopped {len(jobs)} job process(es); the same command resumes them "
                  "from their checkpoints", file=sys.stderr, flush=True)
        if callable(previous):
            previous(signum, frame)
        else:
            raise KeyboardInterrupt

    signal.signal(signal.SIGINT, handler)


def _supervisor_from_env() -> psutil.Process | None:
    value = os.environ.get(SUPERVISOR_ENV, "")
    host, _, rest = value.partition(":")
    pid, _, created = rest.partition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return None
    try:
        process = psutil.Process(int(pid))
        return process if repr(process.create_time()) == created else None
    except psutil.Error:
        return None


def exit_with_supervisor(stage: str) -> None:
    """In a stage's process: stop (KeyboardInterrupt in the main thread) once the DAG runner
    that started it is gone."""
    supervisor = _supervisor_from_env()
    if supervisor is None:
        return

    def watch():
        while supervisor.is_running() and supervisor.status() != psutil.STATUS_ZOMBIE:
            threading.Event().wait(POLL_SECONDS)
        print(f"[{stage}] the DAG runner (pid {supervisor.pid}) is gone: stopping; rerunning the DAG resumes "
              "from the last checkpoint", file=sys.stderr, flush=True)
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)  # wakes a blocking call too

    threading.Thread(target=watch, name="supervisor-watch", daemon=True).start()
