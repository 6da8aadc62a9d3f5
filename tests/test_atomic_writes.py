"""Outputs are written atomically and by one job only.

(a) ``pipeline.io.atomic_path``: an exception (or a SIGKILL) inside the block never leaves a
    partial target; an exception leaves no temp file either.
(b) The Snakemake DAG (forced dry run) of params.yaml and of tests/e2e/params.yaml: no two jobs
    share an output or log path, no job's output lies inside another job's output (a folder
    output such as ``data/raw/<source>``), and no job's ``--out`` folder holds another job's
    outputs, so ``snakemake --cores N`` never has two jobs writing the same file.
(c) Statically: the stage code under ``pipeline/`` writes files only inside ``atomic_path``
    blocks (directly or through the ``pipeline.io`` helpers), apart from an explicit allowlist.
"""

from __future__ import annotations

import ast
import os
import re
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pipeline.io import atomic_path, write_json, write_text

ROOT = Path(__file__).resolve().parents[1]
PIPELINE = ROOT / "pipeline"


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


# ---------------------------------------------------------------------------------- (a) atomic_path


class Boom(RuntimeError):
    """The failure injected inside an atomic_path block."""


def test_atomic_path_success_replaces_target(tmp_path):
    target = tmp_path / "out" / "metrics.json"  # the folder is created
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp.name.startswith(".metrics.json.") and tmp.name.endswith(".tmp")
        assert not target.exists()  # nothing at the target until the block succeeds
        tmp.write_text("new")
    assert target.read_text() == "new"
    assert leftovers(target.parent) == []


def test_atomic_path_exception_leaves_no_target_and_no_temp(tmp_path):
    target = tmp_path / "metrics.json"
    with pytest.raises(Boom):
        with atomic_path(target) as tmp:
            tmp.write_text('{"half": ')
            raise Boom("killed mid-write")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_exception_keeps_old_content(tmp_path):
    target = tmp_path / "metrics.json"
    target.write_text("old")
    with pytest.raises(Boom):
        with atomic_path(target) as tmp:
            tmp.write_text("partial")
            raise Boom()
    assert target.read_text() == "old"
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_written_files_get_the_mode_open_gives(tmp_path, umask):
    """Not the 0600 of a tempfile.mkstemp file: 0666 less the umask, as open(path, "w") gives."""
    old = os.umask(umask)
    try:
        write_json(tmp_path / "metrics.json", {"a": 1})
        with atomic_path(tmp_path / "model.pt") as tmp, open(tmp, "wb") as fh:
            fh.write(b"x")
        open(tmp_path / "plain", "w").close()  # what a plain open() gives, to compare with
    finally:
        os.umask(old)
    for name in ("metrics.json", "model.pt", "plain"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~umask, name


def test_atomic_path_exception_before_any_write(tmp_path):
    target = tmp_path / "x.bin"
    with pytest.raises(Boom):
        with atomic_path(target):
            raise Boom()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("step", ["fsync", "replace"])
@pytest.mark.parametrize("helper", [write_text, write_json], ids=["write_text", "write_json"])
def test_helpers_leave_old_content_when_the_commit_fails(tmp_path, monkeypatch, helper, step):
    """An I/O error at the fsync or at the rename (disk full, EIO): old content kept, temp removed."""
    import pipeline.io

    def fail(*args, **kwargs):
        raise OSError(5, f"simulated {step} failure")

    target = tmp_path / "t.json"
    target.write_text("old")
    monkeypatch.setattr(pipeline.io.os, step, fail)
    with pytest.raises(OSError, match="simulated"):
        helper(target, "new")
    monkeypatch.undo()
    assert target.read_text() == "old"
    assert leftovers(tmp_path) == []


def test_atomic_path_sigkill_mid_write_keeps_old_content(tmp_path):
    """A SIGKILL cannot run the cleanup: the temp file stays, but the target is untouched and the
    leftover is a hidden ``.<name>.*.tmp`` that no stage reads and no engine declares."""
    target = tmp_path / "model.pt"
    target.write_bytes(b"old complete file")
    code = textwrap.dedent(
        f"""
        import os, signal
        from pipeline.io import atomic_path
        with atomic_path({str(target)!r}) as tmp:
            with open(tmp, "wb") as fh:
                fh.write(b"half a new fi")
                fh.flush()
                os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True)
    assert proc.returncode == -signal.SIGKILL
    assert target.read_bytes() == b"old complete file"
    left = leftovers(tmp_path)
    assert len(left) == 1 and re.fullmatch(r"\.model\.pt\..+\.tmp", left[0])
    assert (tmp_path / left[0]).read_bytes() == b"half a new fi"


# ---------------------------------------------------------------------------------- (b) the DAG


def dry_run_jobs(params: Path) -> list[dict]:
    """Every job of a forced Snakemake dry run: rule, input, output, log, shell command.

    Unlike tests/test_dag.py's ``snakemake_jobs`` (keyed by command), this keeps a list, so two
    jobs with the same command or outputs stay two entries.
    """
    out = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "-F", "-p", "--cores", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "PIPELINE_PARAMS": str(params)},
    )
    assert out.returncode == 0, f"snakemake dry run with {params} failed:\n{(out.stdout + out.stderr)[-3000:]}"
    jobs: list[dict] = []
    for line in out.stdout.splitlines():
        if m := re.match(r"^(?:local)?rule (\w+):$", line):
            jobs.append({"rule": m.group(1), "input": [], "output": [], "log": [], "cmd": None})
        elif jobs and (m := re.match(r"^\s+(input|output|log): (.*)$", line)):
            jobs[-1][m.group(1)] = [p.strip() for p in m.group(2).split(",") if p.strip()]
        elif jobs and line.startswith("Shell command: "):
            cmd = line[len("Shell command: ") :].strip()
            jobs[-1]["cmd"] = None if cmd == "None" else cmd
    return jobs


def inside(path: str, folder: str) -> bool:
    return path.startswith(folder.rstrip("/") + "/")


def out_arg(cmd: str) -> str | None:
    m = re.search(r"--out (\S+)", cmd)
    return m.group(1) if m else None


@pytest.fixture(scope="module", params=["params.yaml", "tests/e2e/params.yaml"])
def dag(request):
    jobs = dry_run_jobs(ROOT / request.param)
    assert any(j["rule"] == "train" for j in jobs), "the dry run listed no train job"
    return jobs


def test_no_two_jobs_share_an_output_or_log(dag):
    owner: dict[str, str] = {}
    for i, job in enumerate(dag):
        for path in job["output"] + job["log"]:
            assert path not in owner, f"{path} is written by {owner[path]} and by {job['rule']} (job {i})"
            owner[path] = f"{job['rule']} (job {i})"


def test_no_output_inside_another_jobs_output(dag):
    written = [(path, i, job["rule"]) for i, job in enumerate(dag) for path in job["output"] + job["log"]]
    outputs = [(path, i, job["rule"]) for i, job in enumerate(dag) for path in job["output"]]
    for path, i, rule in written:
        for folder, j, other in outputs:
            if i != j:
                assert not inside(path, folder), f"{rule} (job {i}) writes {path} inside {other} (job {j})'s output {folder}"


def test_out_folders_hold_only_the_jobs_own_outputs(dag):
    """A stage writes into its ``--out`` folder; no other job's output or log may live there."""
    stages = [(i, job) for i, job in enumerate(dag) if job["cmd"] and job["cmd"].startswith("python -m pipeline ")]
    assert stages
    for i, job in stages:
        out = out_arg(job["cmd"])
        if out is None:
            continue
        for path in job["output"]:
            assert path == out or inside(path, out), f"{job['rule']}: output {path} is outside its --out {out}"
        for j, other in enumerate(dag):
            if j != i:
                for path in other["output"] + other["log"]:
                    assert path != out and not inside(path, out), f"{other['rule']}'s {path} is inside {job['rule']}'s --out {out}"


def test_every_stage_logs_under_logs(dag):
    for job in dag:
        if job["cmd"]:
            assert job["log"], f"{job['rule']} has no log"
            for path in job["log"]:
                assert inside(path, "logs"), path
                assert f"--log {path}" in job["cmd"], f"{job['rule']}: --log does not name its declared log {path}"


# ---------------------------------------------------------------------------------- (c) raw writes

WRITE_METHODS = {
    # polars / pandas / numpy / pathlib / torch writers that create or overwrite a file
    "write_parquet", "write_csv", "write_ipc", "write_json", "write_ndjson", "write_avro", "write_excel",
    "write_delta", "sink_parquet", "sink_csv", "sink_ipc", "to_csv", "to_parquet", "to_json", "to_pickle",
    "save", "savez", "savez_compressed", "savetxt", "tofile", "write_text", "write_bytes",
}  # fmt: skip
FUNCTIONS_THAT_WRITE = {
    ("shutil", "copy"), ("shutil", "copy2"), ("shutil", "copyfile"), ("shutil", "copytree"), ("shutil", "move"),
    ("os", "replace"), ("os", "rename"), ("os", "link"), ("os", "symlink"),
}  # fmt: skip
# writers that return a string when given no destination (polars: df.write_csv() -> str)
STRING_WHEN_NO_FILE = {"write_csv", "write_json", "write_ndjson"}

# (file relative to pipeline/, enclosing function, write) -> why it is not a stage output written raw
ALLOWED = {
    ("io.py", "atomic_path", "open(mode='rb+')"): "the helper itself: fsync of the finished temp file",
    ("io.py", "atomic_path", "os.replace"): "the helper itself: the atomic rename",
    ("__main__.py", "_logging_to", "open(mode='w')"): "the --log Tee: log files are not outputs",
    ("training/trainer.py", "train_run", "os.replace"): (
        "moves a resume.pt that cannot be loaded aside (resume.pt.corrupt): a rename, not an output"
    ),
    ("stages/download.py", "_download_once", "open(mode='wb')"): (
        "streams into a tempfile.mkstemp '.<out>.*.download' file beside the output folder, "
        "checksummed, copied into the staging folder and removed in fetch()'s finally"
    ),
    ("stages/download.py", "fetch", "shutil.copyfile"): "copies into the tempfile.mkdtemp staging folder",
    ("stages/download.py", "_extract", "open(mode='wb')"): "extracts into the tempfile.mkdtemp staging folder",
    ("stages/download.py", "_replace_dir", "os.replace"): "renames the finished staging folder over the output folder",
    ("reporting/aggregate.py", "build_outputs", ".to_csv"): (
        "pipeline.reporting.significance.to_csv returns the CSV text; every output is written atomically later"
    ),
    ("stages/significance.py", "main", ".to_csv"): (
        "pipeline.reporting.significance.to_csv returns the CSV text, written with write_text (atomic)"
    ),
}


def _describe(call: ast.Call) -> str | None:
    """A short name of the write this call performs, or None when it writes no file."""
    func = call.func
    if isinstance(func, ast.Name) and func.id == "open":
        mode = call.args[1] if len(call.args) > 1 else next((k.value for k in call.keywords if k.arg == "mode"), None)
        if mode is None:
            return None
        if not isinstance(mode, ast.Constant) or not isinstance(mode.value, str):
            return "open(mode=<dynamic>)"
        return f"open(mode={mode.value!r})" if set(mode.value) & set("wax+") else None
    if isinstance(func, ast.Attribute):
        if isinstance(func.value, ast.Name) and (func.value.id, func.attr) in FUNCTIONS_THAT_WRITE:
            return f"{func.value.id}.{func.attr}"
        if func.attr in WRITE_METHODS:
            if func.attr in STRING_WHEN_NO_FILE and not call.args and not any(k.arg == "file" for k in call.keywords):
                return None
            return f".{func.attr}"
    return None


def _is_atomic_path(expr: ast.expr) -> bool:
    if not isinstance(expr, ast.Call):
        return False
    f = expr.func
    return (isinstance(f, ast.Name) and f.id == "atomic_path") or (isinstance(f, ast.Attribute) and f.attr == "atomic_path")


def raw_writes(source: str) -> list[tuple[str, str, int]]:
    """(enclosing function qualname, write, line) of every file write outside an atomic_path block.

    "Inside" means in the body of a ``with`` that has an ``atomic_path(...)`` item, or in a later
    item of that same ``with`` (``with atomic_path(p) as tmp, open(tmp, "wb") as fh:``).
    """
    found: list[tuple[str, str, int]] = []

    def visit(node: ast.AST, scope: list[str], guarded: bool) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            for child in ast.iter_child_nodes(node):
                visit(child, scope + [node.name], guarded)
            return
        if isinstance(node, (ast.With, ast.AsyncWith)):
            seen_atomic = guarded
            for item in node.items:
                visit(item.context_expr, scope, seen_atomic)
                seen_atomic = seen_atomic or _is_atomic_path(item.context_expr)
            for child in node.body:
                visit(child, scope, seen_atomic)
            return
        if isinstance(node, ast.Call) and not guarded:
            what = _describe(node)
            if what:
                found.append((".".join(scope) or "<module>", what, node.lineno))
        for child in ast.iter_child_nodes(node):
            visit(child, scope, guarded)

    visit(ast.parse(source), [], False)
    return found


def test_raw_write_detector():
    """The detector itself, on a snippet with one write of each kind."""
    snippet = textwrap.dedent(
        """
        def bad(df, arr, state, path):
            open(path, "w").write("x")
            df.write_parquet(path)
            np.save(path, arr)
            torch.save(state, path)
            Path(path).write_text("x")
            Path(path).write_bytes(b"x")
            df.write_csv(path)
            shutil.copyfile(path, path + ".bak")

        def fine(df, arr, state, path):
            with open(path) as fh, open(path, "rb") as fh2:
                fh.read()
            text = df.write_csv()  # returns a string
            with atomic_path(path) as tmp:
                df.write_parquet(tmp)
                torch.save(state, tmp)
                with open(tmp, "w") as fh:
                    fh.write("x")
            with atomic_path(path) as tmp, open(tmp, "wb") as fh:
                np.save(fh, arr)
        """
    )
    found = raw_writes(snippet)
    assert {f for f, _, _ in found} == {"bad"}
    assert [w for _, w, _ in found] == [
        "open(mode='w')", ".write_parquet", ".save", ".save", ".write_text", ".write_bytes", ".write_csv", "shutil.copyfile"
    ]


def test_stage_code_writes_only_through_atomic_path():
    found: dict[tuple[str, str, str], list[int]] = {}
    for path in sorted(PIPELINE.rglob("*.py")):
        rel = path.relative_to(PIPELINE).as_posix()
        for function, what, line in raw_writes(path.read_text()):
            found.setdefault((rel, function, what), []).append(line)
    violations = {k: v for k, v in found.items() if k not in ALLOWED}
    assert not violations, "raw writes outside atomic_path:\n" + "\n".join(
        f"  pipeline/{rel}:{','.join(map(str, lines))} in {fn}(): {what}" for (rel, fn, what), lines in sorted(violations.items())
    )
    stale = sorted(set(ALLOWED) - set(found))
    assert not stale, f"allowlist entries that no longer match any write (remove them): {stale}"
