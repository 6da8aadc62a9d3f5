"""Fault injection: a training run SIGKILLed at random points and restarted ends bit-identical.

    python benchmarks/fault_injection.py [--kills 4] [--seed 0] [--epochs 30] [--work DIR]

1. prepares a small real split once (default ML-100K clean, through the pipeline's own
   ``fetch`` + ``prepare``, from the mirror folder: $PIPELINE_MIRROR, else params.yaml's
   ``paths.mirror``, i.e. ../shared/datasets beside the repository);
2. writes a params file in the scratch folder: tests/e2e/params.yaml with more epochs
   (``--epochs``, eval_every 2, checkpoint_every 1, patience 10);
3. runs ``python -m pipeline train ...`` uninterrupted (the reference);
4. runs the same command in another run folder, killing its whole process group with SIGKILL
   at a seeded random point ``--kills`` times, restarting it each time, then lets it finish.
   The kill point is drawn in units of training progress, not wall time (start-up and epoch
   times vary a lot on a busy machine): x ~ uniform(0, ``--max-frac`` (0.7) * epochs left after
   the last checkpoint); the child is killed ``frac(x)`` of an epoch (timed on its own recent
   epochs) after it prints the line of epoch ``last checkpoint + floor(x)`` (for floor(x) = 0,
   after its start line, so a kill can also land while it loads resume.pt). Kills thus land
   mid-epoch, mid-evaluation or mid-checkpoint-write;
5. after each kill checks the run folder: a ``resume.pt`` present must load completely, no
   finished output (metrics.json, model.pt, ...) may appear, the next start must resume from
   the epoch that ``resume.pt`` holds, and leftover ``.*.tmp`` files of interrupted atomic
   writes are listed. After the first kill it also plants such leftovers (a truncated
   checkpoint, half a metrics.json; ``--no-plant-tmp`` to skip): they must never be read;
6. compares metrics.json, history.csv, per_user.parquet and model.pt byte for byte with the
   reference and prints a report. Exit status 1 if
   anything differs or a check failed.

Every subprocess runs with the scratch folder as its working directory, so the timing files
the train stage writes under ``logs/`` stay out of the repository.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
E2E_PARAMS = REPO / "tests" / "e2e" / "params.yaml"
COMPARED = ("metrics.json", "history.csv", "per_user.parquet", "model.pt")
OUTPUTS = ("metrics.json", "history.csv", "per_user.parquet", "model.pt")
RESUMED = re.compile(r"resumed from (\S+) after epoch (\d+)")
EPOCH_LINE = re.compile(r"\] epoch\s+(\d+)\s")
# the start of training: the train stage's first line (before it reads resume.pt), else any later sign of life
START_LINE = re.compile(r"\] \d+ users, \d+ items|resumed from |\] epoch\s+\d+\s")


def default_mirror() -> Path:
    """The mirror the pipeline reads: $PIPELINE_MIRROR, else params.yaml's ``paths.mirror``."""
    from pipeline.config import load_params, mirror_dir

    return (mirror_dir(load_params(REPO / "params.yaml")) or REPO.parent / "shared" / "datasets").resolve()


def prepare_data(params_file: Path, split_name: str, mirror: Path, work: Path) -> Path:
    """fetch + prepare one split of ``params_file`` into ``work/data``; reused when present."""
    from pipeline.config import load_params, mirror_dir, protocol_config, source_config, split_config
    from pipeline.stages.download import fetch
    from pipeline.stages.prepare import prepare

    prepared = work / "data" / "prepared" / split_name
    if (prepared / "interactions.parquet").is_file() and (prepared / "stats.json").is_file():
        return prepared
    os.environ["PIPELINE_MIRROR"] = str(mirror)  # mirror_dir() reads it
    params = load_params(params_file)
    split = split_config(params, split_name)
    raw = work / "data" / "raw" / split.source
    fetch(source_config(params, split.source), raw, mirror_dir(params))
    prepare(split, protocol_config(params), raw, prepared)
    return prepared


def write_params(work: Path, mirror: Path, epochs: int, threads: int) -> Path:
    """tests/e2e/params.yaml with a longer, checkpoint-every-epoch training block."""
    from pipeline.config import read_params

    params = read_params(E2E_PARAMS)  # the overlay resolved onto params.yaml
    params["paths"]["mirror"] = str(mirror)
    params["training"].update(eval_every=2, checkpoint_every=1, patience=10, threads=threads)
    params["models"]["diffrec"].setdefault("defaults", {})["epochs"] = epochs
    params["paper_results"] = str(REPO / params["paper_results"])
    path = work / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    from pipeline.config import load_params

    load_params(path)  # validate now rather than in every child
    return path


class Runner:
    def __init__(self, work: Path, params_file: Path, split: str, model: str, seed: int, data: Path):
        self.work, self.split, self.model, self.seed, self.data = work, split, model, seed, data
        self.env = {**os.environ, "PIPELINE_PARAMS": str(params_file), "PYTHONUNBUFFERED": "1"}
        self.env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))

    def command(self, run_dir: Path) -> list[str]:
        return [
            sys.executable, "-m", "pipeline", "train", "--split", self.split, "--model", self.model,
            "--seed", str(self.seed), "--data", str(self.data), "--out", str(run_dir),
        ]  # fmt: skip

    def start(self, run_dir: Path, log: Path) -> tuple[subprocess.Popen, object]:
        fh = open(log, "w")  # the child's stdout + stderr (our own file, not a stage output)
        proc = subprocess.Popen(
            self.command(run_dir), cwd=self.work, env=self.env, stdout=fh, stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: kill the group, children included
        )  # fmt: skip
        return proc, fh


def tmp_leftovers(run_dir: Path) -> list[str]:
    return sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob(".*.tmp"))


def plant_leftovers(run_dir: Path) -> dict[str, bytes]:
    """Files like those a SIGKILL inside ``atomic_path`` leaves: a truncated checkpoint and half a JSON."""
    run_dir.mkdir(parents=True, exist_ok=True)
    resume = run_dir / "resume.pt"
    planted = {
        ".resume.pt.planted0.tmp": resume.read_bytes()[: max(1, resume.stat().st_size // 2)] if resume.exists() else b"PK\x03\x04",
        ".metrics.json.planted1.tmp": b'{\n  "best_epoch": 999,\n  "test": {',
        ".per_user.parquet.planted2.tmp": b"PAR1",
    }
    for name, content in planted.items():
        (run_dir / name).write_bytes(content)
    return planted


def checkpoint_epoch(path: Path) -> int | None:
    """Epoch of a complete resume.pt; raises if the file is partial/corrupt."""
    from pipeline.training.checkpoint import load_checkpoint

    if not path.exists():
        return None
    return int(load_checkpoint(path)["epoch"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=4, help="number of SIGKILLs (default 4)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random kill delays")
    parser.add_argument("--epochs", type=int, default=30, help="training epochs (default 30)")
    parser.add_argument("--threads", type=int, default=1, help="training.threads (default 1)")
    parser.add_argument("--split", default="ml-100k_clean")
    parser.add_argument("--model", default="diffrec")
    parser.add_argument("--run-seed", type=int, default=1, help="the training seed")
    parser.add_argument("--max-frac", type=float, default=0.7,
                        help="latest kill point, as a fraction of the epochs left after the last checkpoint")
    parser.add_argument("--no-plant-tmp", dest="plant_tmp", action="store_false",
                        help="do not plant fake leftovers of interrupted atomic writes after the first kill")
    parser.add_argument("--work", help="scratch folder (default: a new temporary folder, removed unless --keep)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    args = parser.parse_args()

    sys.path.insert(0, str(REPO))
    mirror = default_mirror()
    work = Path(args.work).resolve() if args.work else Path(tempfile.mkdtemp(prefix="fault-injection."))
    work.mkdir(parents=True, exist_ok=True)
    keep = args.keep or bool(args.work)
    rng = random.Random(args.seed)
    problems: list[str] = []
    proc: subprocess.Popen | None = None
    try:
        t = time.perf_counter()
        data = prepare_data(E2E_PARAMS, args.split, mirror, work)
        params_file = write_params(work, mirror, args.epochs, args.threads)
        print(f"fault injection: split {args.split}, model {args.model}, seed {args.run_seed}, {args.epochs} epochs, "
              f"checkpoint every epoch; data {data} ({time.perf_counter() - t:.1f}s); scratch {work}", flush=True)
        runner = Runner(work, params_file, args.split, args.model, args.run_seed, data)
        logs = work / "logs" / "fault_injection"
        logs.mkdir(parents=True, exist_ok=True)

        # ---- the uninterrupted reference -----------------------------------------------------
        ref_dir = work / "runs" / "reference"
        shutil.rmtree(ref_dir, ignore_errors=True)
        t0 = time.perf_counter()
        proc, fh = runner.start(ref_dir, logs / "reference.log")
        first_epoch_at = None
        while proc.poll() is None:  # note when the first epoch line appears (start-up cost)
            if first_epoch_at is None and EPOCH_LINE.search((logs / "reference.log").read_text()):
                first_epoch_at = time.perf_counter() - t0
            time.sleep(0.05)
        fh.close()
        ref_seconds = time.perf_counter() - t0
        if proc.returncode != 0:
            print((logs / "reference.log").read_text())
            print(f"FAIL: the reference run exited with status {proc.returncode}")
            return 1
        ref_metrics = json.loads((ref_dir / "metrics.json").read_text())
        ref_epochs = int(ref_metrics["epochs_trained"])
        startup = first_epoch_at if first_epoch_at is not None else 0.0
        per_epoch = (ref_seconds - startup) / max(ref_epochs, 1)
        print(f"reference: {ref_seconds:.1f}s ({startup:.1f}s start-up, {per_epoch:.2f}s/epoch), "
              f"{ref_epochs} epochs, best epoch {ref_metrics['best_epoch']}", flush=True)

        # ---- the killed and restarted run ----------------------------------------------------
        run_dir = work / "runs" / "killed"
        shutil.rmtree(run_dir, ignore_errors=True)
        kills_done = 0
        planted: dict[str, bytes] = {}
        attempt = 0
        while True:
            attempt += 1
            log = logs / f"attempt{attempt}.log"
            done_epoch = checkpoint_epoch(run_dir / "resume.pt") or 0
            killing = kills_done < args.kills
            if killing:  # the kill point, in epochs of progress after the checkpoint: x in [0, 0.7 * epochs left)
                x = rng.uniform(0.0, args.max_frac * max(ref_epochs - done_epoch, 1))
                k, frac = int(x), x - int(x)
                anchor = START_LINE if k == 0 else re.compile(rf"\] epoch\s+{done_epoch + k}\s")
                where = (f"{frac:.2f} epoch after the start line" if k == 0
                         else f"{frac:.2f} epoch after the epoch-{done_epoch + k} line")
            t1 = time.perf_counter()
            proc, fh = runner.start(run_dir, log)
            if killing:
                deadline, seen, last_line_at, epoch_seconds = None, 0, None, per_epoch
                while proc.poll() is None:
                    now = time.perf_counter()
                    text = log.read_text()
                    n = len(EPOCH_LINE.findall(text))
                    if n > seen:  # measure this attempt's own epoch time (the machine may be busy)
                        if last_line_at is not None:
                            epoch_seconds = (now - last_line_at) / (n - seen)
                        seen, last_line_at = n, now
                    if deadline is None and anchor.search(text):
                        deadline = now + frac * epoch_seconds
                    if deadline is not None and now >= deadline:
                        os.killpg(proc.pid, signal.SIGKILL)
                        break
                    time.sleep(0.005)
                proc.wait()
            else:
                proc.wait()
            fh.close()
            elapsed = time.perf_counter() - t1
            text = log.read_text()
            resumed = RESUMED.search(text)
            epochs_seen = [int(e) for e in EPOCH_LINE.findall(text)]
            resumed_txt = f"'{resumed.group(0)}'" if resumed else "no resume line (fresh start)"
            progress = f"epochs {epochs_seen[0]}-{epochs_seen[-1]} printed" if epochs_seen else "no epoch printed"
            started = bool(epochs_seen) or proc.returncode == 0  # got past start-up (model built, resume.pt read)
            if started and done_epoch > 0 and not (resumed and int(resumed.group(2)) == done_epoch):
                problems.append(f"attempt {attempt}: resume.pt held epoch {done_epoch} but the run said: {resumed_txt}")
            if resumed and done_epoch == 0:
                problems.append(f"attempt {attempt}: resumed although no resume.pt was there")
            if epochs_seen and epochs_seen[0] != done_epoch + 1:
                problems.append(f"attempt {attempt}: first epoch trained was {epochs_seen[0]}, expected {done_epoch + 1}")
            if not started:
                resumed_txt = "killed during start-up (before reading resume.pt)"

            if killing and proc.returncode == -signal.SIGKILL:
                kills_done += 1
                leftovers = tmp_leftovers(run_dir) if run_dir.exists() else []
                try:
                    ckpt = checkpoint_epoch(run_dir / "resume.pt")
                    ckpt_txt = f"resume.pt complete (epoch {ckpt})" if ckpt is not None else "no resume.pt"
                except Exception as err:  # a partial checkpoint the next run would trust
                    ckpt_txt = f"resume.pt UNREADABLE: {type(err).__name__}: {err}"
                    problems.append(f"kill {kills_done}: {ckpt_txt}")
                present = [n for n in OUTPUTS if (run_dir / n).exists()]
                if present and len(present) != len(OUTPUTS):
                    problems.append(f"kill {kills_done}: incomplete set of outputs after the kill: {present}")
                print(f"kill {kills_done}: SIGKILL at {elapsed:5.2f}s ({where}); {resumed_txt}; {progress}; "
                      f"{ckpt_txt}; outputs present: {present or 'none'}; "
                      f"temp leftovers: {leftovers or 'none'}", flush=True)
                if kills_done == 1 and args.plant_tmp:
                    planted = plant_leftovers(run_dir)
                    print(f"         planted leftovers of interrupted writes (garbage; must never be read): {sorted(planted)}")
                continue
            if killing:  # the run ended on its own before the kill
                print(f"attempt {attempt}: finished by itself after {elapsed:.2f}s, before the kill", flush=True)
            if proc.returncode != 0:
                print(text)
                problems.append(f"attempt {attempt}: exited with status {proc.returncode}")
                break
            print(f"final run: finished in {elapsed:.1f}s; {resumed_txt}; {progress}", flush=True)
            break

        # ---- compare ---------------------------------------------------------------------------
        print("comparison with the uninterrupted run:")
        for name in COMPARED:
            a, b = ref_dir / name, run_dir / name
            if not b.exists():
                verdict = "MISSING"
            else:
                verdict = "IDENTICAL" if a.read_bytes() == b.read_bytes() else "DIFFERENT"
            print(f"  {name:18s} {verdict}")
            if verdict != "IDENTICAL":
                problems.append(f"{name}: {verdict}")
        if (run_dir / "resume.pt").exists():
            problems.append("resume.pt still present after the run finished")
        for name, content in planted.items():
            path = run_dir / name
            if path.exists() and path.read_bytes() != content:
                problems.append(f"planted {name} was modified")
        stale = tmp_leftovers(run_dir)
        real = [x for x in stale if x not in planted]
        print(f"  temp files left in the run folder after it finished: {stale or 'none'}"
              + (f" (planted: {sorted(set(stale) & set(planted))}; from the kills: {real or 'none'})" if planted else ""))
        if stale:
            print("  note: the trainer neither reads nor removes stale .*.tmp files; they are ignored, not cleaned")
        if kills_done < args.kills:
            problems.append(f"only {kills_done} of {args.kills} kills landed before the run finished")
        if problems:
            print("FAIL:\n  " + "\n  ".join(problems))
            return 1
        print(f"OK: {kills_done} kills, final outputs identical to the uninterrupted run")
        return 0
    finally:
        if proc is not None and proc.poll() is None:  # interrupted (Ctrl-C, error): leave no child behind
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if keep:
            print(f"scratch folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
