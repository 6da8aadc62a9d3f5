"""Fault injection with real processes: ``python -m pipeline train`` SIGKILLed after its first
checkpoint and restarted ends with the same bytes as an uninterrupted run; so does a
``python -m pipeline tune`` grid killed in its second point, its declared output deleted as the
engines do before they rerun a job.

The long version (real ML-100K split, several kills at random points) is
``benchmarks/fault_injection.py``; this one uses a small planted dataset and a tiny DiffRec so the
whole module runs in well under a minute. The reference run and the run that is killed run at the
same time (two processes) to halve the wall time.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from pipeline.config import ConfigError, load_params, read_params
from planted import write_planted
from pipeline.training.checkpoint import load_checkpoint
from pipeline.training.trainer import RESUME_FILE

ROOT = Path(__file__).resolve().parents[1]
E2E_PARAMS = ROOT / "tests" / "e2e" / "params.yaml"
SPLIT, MODEL, SEED = "ml-100k_clean", "diffrec", 1  # a split name the e2e params know; the data is ours
N_USERS, N_ITEMS, GROUPS = 1000, 120, 4
EPOCHS = 12
OUTPUTS = ("metrics.json", "history.csv", "per_user.parquet", "model.pt")
COMPARED = ("metrics.json", "history.csv", "per_user.parquet", "model.pt")
TIMEOUT = 120


def make_data(folder: Path) -> Path:
    """Planted groups: each user interacts with items of its group's block (plus one random item).

    Per user, in order: 6 train, 2 valid, 2 test interactions (canonical parquet + stats.json).
    """
    write_planted(folder, N_USERS, N_ITEMS, GROUPS)
    return folder


def make_params(path: Path, grid: dict | None = None) -> Path:
    """tests/e2e/params.yaml with a tiny DiffRec, a checkpoint every epoch and no early stop (and
    ``grid`` as its hyperparameter grid)."""
    params = read_params(E2E_PARAMS)  # the overlay resolved onto params.yaml
    params["paths"]["mirror"] = None  # nothing is downloaded here
    params["paper_results"] = str(ROOT / params["paper_results"])
    params["training"].update(threads=1, eval_every=2, patience=EPOCHS, checkpoint_every=1, select_metric="recall@10")
    params["evaluation"].update(topk=[5, 10], batch_size=500)
    # small batches: many optimizer steps per epoch, so an epoch lasts long enough to kill mid-run
    params["models"][MODEL].setdefault("defaults", {}).update(
        epochs=EPOCHS, dims=[16], emb_size=4, batch_size=8, lr=0.01, steps=5, noise_scale=0.1, noise_min=0.01, noise_max=0.1
    )
    if grid is not None:
        params["models"][MODEL]["grid"] = grid
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        load_params(path)  # fail here, with the reason, rather than in every child
    except ConfigError as err:
        pytest.fail(f"params derived from {E2E_PARAMS.relative_to(ROOT)} do not validate: {err}")
    return path


class Stage:
    """``python -m pipeline train`` (one run folder) and ``tune`` (one grid), each in its own
    process group."""

    def __init__(self, work: Path, params: Path, data: Path):
        self.work, self.data = work, data
        self.env = {**os.environ, "PIPELINE_PARAMS": str(params), "PYTHONUNBUFFERED": "1"}
        self.env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))

    def start(self, run_dir: Path, log: Path) -> subprocess.Popen:
        cmd = [sys.executable, "-m", "pipeline", "train", "--split", SPLIT, "--model", MODEL, "--seed", str(SEED),
               "--data", str(self.data), "--out", str(run_dir)]  # fmt: skip
        return self.spawn(cmd, self.work, log)

    def tune(self, cwd: Path, out: Path, log: Path) -> subprocess.Popen:
        """``python -m pipeline tune`` of the grid into ``out``, run in ``cwd`` (its logs/ there)."""
        cmd = [sys.executable, "-m", "pipeline", "tune", "--split", SPLIT, "--model", MODEL, "--seed", str(SEED),
               "--data", str(self.data), "--out", str(out)]  # fmt: skip
        return self.spawn(cmd, cwd, log)

    def spawn(self, cmd: list[str], cwd: Path, log: Path) -> subprocess.Popen:
        with open(log, "w") as fh:  # the child keeps its own copy of the descriptor
            return subprocess.Popen(cmd, cwd=cwd, env=self.env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)


def finish(proc: subprocess.Popen, log: Path) -> str:
    try:
        proc.wait(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    text = log.read_text()
    assert proc.returncode == 0, f"exit status {proc.returncode}:\n{text}"
    return text


def kill_once_written(proc: subprocess.Popen, path: Path, log: Path, timeout: float) -> None:
    """SIGKILL ``proc``'s process group as soon as ``path`` exists (failing if it ends or
    ``timeout`` seconds pass first)."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, f"it ended before {path.name} was written:\n{log.read_text()}"
        assert time.monotonic() < deadline, f"no {path} appeared"
        time.sleep(0.002)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def files_under(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def faults(tmp_path_factory):
    """Run a reference and, side by side, a run SIGKILLed right after its first checkpoint;
    then plant leftovers of interrupted atomic writes and restart the killed run."""
    work = tmp_path_factory.mktemp("faults")
    train = Stage(work, make_params(work / "params.yaml"), make_data(work / "data"))
    ref_dir, run_dir = work / "runs" / "reference", work / "runs" / "killed"
    stdout = work / "stdout"  # the children's console output (ours, not the stage's)
    stdout.mkdir()
    before = files_under(work)

    procs: list[subprocess.Popen] = []
    try:
        reference = train.start(ref_dir, stdout / "reference.log")
        victim = train.start(run_dir, stdout / "killed.log")
        procs += [reference, victim]
        kill_once_written(victim, run_dir / RESUME_FILE, stdout / "killed.log", TIMEOUT)  # complete once renamed in place
        after_kill = {
            "returncode": victim.returncode,
            "files": sorted(p.name for p in run_dir.iterdir()),
            "checkpoint_epoch": load_checkpoint(run_dir / RESUME_FILE)["epoch"],  # complete, loadable
            "log": (stdout / "killed.log").read_text(),
        }

        # what a SIGKILL inside atomic_path leaves behind: garbage beside the real files
        resume_bytes = (run_dir / RESUME_FILE).read_bytes()
        planted = {
            f".{RESUME_FILE}.planted0.tmp": resume_bytes[: len(resume_bytes) // 2],
            ".metrics.json.planted1.tmp": b'{"best_epoch": 999, "test": {',
            ".model.pt.planted2.tmp": b"PK\x03\x04",
        }
        for name, content in planted.items():
            (run_dir / name).write_bytes(content)

        resumed = train.start(run_dir, stdout / "resumed.log")
        procs.append(resumed)
        resumed_log = finish(resumed, stdout / "resumed.log")
        finish(reference, stdout / "reference.log")
    finally:  # never leave a child behind when an assertion above fails
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    written = sorted(files_under(work) - before)
    return dict(
        work=work, ref_dir=ref_dir, run_dir=run_dir, after_kill=after_kill, planted=planted, resumed_log=resumed_log,
        written=written,
    )


def test_kill_landed_mid_run(faults):
    after = faults["after_kill"]
    assert after["returncode"] == -signal.SIGKILL
    assert 1 <= after["checkpoint_epoch"] < EPOCHS  # killed after a checkpoint, before the end
    assert "] epoch " in after["log"] and "done in" not in after["log"]


def test_killed_run_leaves_no_outputs(faults):
    """Outputs appear only complete: after the kill none of them exists, only resume.pt (+ temp files)."""
    files = faults["after_kill"]["files"]
    assert not set(OUTPUTS) & set(files), files
    visible = [f for f in files if not (f.startswith(".") and f.endswith(".tmp"))]  # temp files of atomic_path
    assert visible == [RESUME_FILE], files


def test_restart_resumes_from_the_checkpoint(faults):
    epoch = faults["after_kill"]["checkpoint_epoch"]
    log = faults["resumed_log"]
    m = re.search(r"resumed from (\S+) after epoch (\d+)", log)
    assert m, log
    assert Path(m.group(1)).name == RESUME_FILE and int(m.group(2)) == epoch  # not one of the planted .tmp files
    trained = [int(e) for e in re.findall(r"\] epoch\s+(\d+)\s", log)]
    assert trained == list(range(epoch + 1, EPOCHS + 1))


def test_restarted_run_matches_uninterrupted(faults):
    ref_dir, run_dir = faults["ref_dir"], faults["run_dir"]
    for name in COMPARED:
        assert (run_dir / name).read_bytes() == (ref_dir / name).read_bytes(), name
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["epochs_trained"] == EPOCHS
    assert metrics["best_epoch"] > faults["after_kill"]["checkpoint_epoch"]  # the best state came after the kill
    assert not (run_dir / RESUME_FILE).exists()
    assert (run_dir / "model.pt").is_file()


def test_leftover_tmp_files_are_not_mistaken_for_outputs(faults):
    """Planted leftovers of interrupted writes are never read or renamed into place: the
    restarted run deletes them."""
    run_dir = faults["run_dir"]
    for name in faults["planted"]:
        assert not (run_dir / name).exists(), f"{name} was left behind"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["best_epoch"] != 999
    # Snakemake's declared outputs are the plain names; a .tmp can never match one of them
    assert all(not name.endswith(".tmp") and not name.startswith(".") for name in OUTPUTS)
    assert load_checkpoint(run_dir / "model.pt")["epoch"] == metrics["best_epoch"]


def test_train_stage_writes_only_its_outputs_and_logs(faults):
    """Everything the stage wrote (in its working directory) is a declared output of the train
    rule, or under logs/ (the timing file); resume.pt is gone once the run is finished."""
    written = [w for w in faults["written"] if not w.startswith("stdout/")]
    ref = sorted(w.split("/", 2)[2] for w in written if w.startswith("runs/reference/"))
    assert ref == sorted(OUTPUTS)
    other = [w for w in written if not w.startswith("runs/")]
    assert other and all(w.startswith("logs/") for w in other), other
    killed = {w.split("/", 2)[2] for w in written if w.startswith("runs/killed/")}
    # temporaries of interrupted writes (planted, or left by the kill) are removed on restart
    assert not {k for k in killed if k.startswith(".") and k.endswith(".tmp")}
    assert killed == set(OUTPUTS)


GRID = {"lr": [0.01, 0.02]}
TUNE_OUT = Path("runs") / SPLIT / MODEL / "tuning"  # relative to each grid's working directory


@pytest.fixture(scope="module")
def tune_faults(tmp_path_factory):
    """A reference grid and, side by side, the same grid SIGKILLed once its second point has a
    checkpoint; then, as Snakemake and ``dvc repro`` do before they run the job again, its
    declared output deleted (if any) and the same command run again."""
    from pipeline.stages.tune import work_folder

    work = tmp_path_factory.mktemp("tune-faults")
    stage = Stage(work, make_params(work / "params.yaml", GRID), make_data(work / "data"))
    ref_cwd, cwd = work / "reference", work / "killed"
    ref_cwd.mkdir(), cwd.mkdir()
    partial = cwd / work_folder(TUNE_OUT)
    procs: list[subprocess.Popen] = []
    try:
        reference = stage.tune(ref_cwd, TUNE_OUT, work / "reference.log")
        victim = stage.tune(cwd, TUNE_OUT, work / "killed.log")
        procs += [reference, victim]
        kill_once_written(victim, partial / "point1" / RESUME_FILE, work / "killed.log", 2 * TIMEOUT)
        after_kill = {"returncode": victim.returncode, "output": (cwd / TUNE_OUT).exists(),
                      "partial": sorted(files_under(partial))}
        shutil.rmtree(cwd / TUNE_OUT, ignore_errors=True)  # the engines delete a job's declared output
        resumed = stage.tune(cwd, TUNE_OUT, work / "resumed.log")
        procs.append(resumed)
        resumed_log = finish(resumed, work / "resumed.log")
        finish(reference, work / "reference.log")
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    return dict(ref=ref_cwd / TUNE_OUT, out=cwd / TUNE_OUT, partial=partial, after_kill=after_kill, resumed_log=resumed_log)


def test_a_killed_grid_has_no_output_and_keeps_its_work(tune_faults):
    """Killed in its second point, the grid has written none of its declared output, and its work
    folder holds the finished first point and the second one's checkpoint."""
    after = tune_faults["after_kill"]
    assert after["returncode"] == -signal.SIGKILL and not after["output"]
    assert {"point0/metrics.json", "point0/hyper.json", f"point1/{RESUME_FILE}"} <= set(after["partial"]), after["partial"]
    assert "point1/metrics.json" not in after["partial"]


def test_a_resumed_grid_keeps_its_finished_point_and_matches_an_uninterrupted_one(tune_faults):
    log = tune_faults["resumed_log"]
    assert log.count("already finished: kept") == 1 and "starting it over" not in log
    assert re.search(r"resumed from \S+ after epoch \d+", log), log
    ref, out = tune_faults["ref"], tune_faults["out"]
    assert files_under(out) == files_under(ref) and "selected.json" in files_under(out)
    for name in sorted(files_under(ref)):
        assert (out / name).read_bytes() == (ref / name).read_bytes(), name
    assert not tune_faults["partial"].exists()  # renamed into the declared output
