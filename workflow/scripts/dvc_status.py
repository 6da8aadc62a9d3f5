"""`dvc status` in one line: which stages differ from dvc.lock, and why (`make status`).

A fresh clone holds git's files only (runs' metrics, results/), none of the DVC outputs (data,
models, per-user tables): plain `dvc status` then lists hundreds of "deleted" / "not in cache"
lines. This groups the stages by cause:

* absent: outputs (or the upstream outputs it reads) that this workspace does not hold (build
  them: `make reproduce`; or `dvc pull` from a remote someone pushed to);
* changed: code, params, command or an input changed since dvc.lock was recorded (rerun them);
* differing: outputs present but other than dvc.lock records (e.g. retrained on another CPU).

    python workflow/scripts/dvc_status.py [-v]   # -v: the stage names of every group
"""

from __future__ import annotations

import json
import subprocess
import sys

ABSENT = {"deleted", "not in cache"}


def classify(status: dict) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {"absent": [], "changed": [], "differing": []}
    for stage, changes in status.items():
        outs_absent, outs_modified, inputs_changed = False, False, False
        for change in changes:
            if isinstance(change, str):  # "changed checksum", "always changed"
                inputs_changed = True
                continue
            for kind, detail in change.items():
                if kind == "changed outs":
                    states = set(detail.values())
                    outs_absent |= bool(states & ABSENT)
                    outs_modified |= bool(states - ABSENT)
                elif kind == "changed deps":  # an absent upstream output is absence, not a change
                    states = {state if isinstance(state, str) else "params" for state in detail.values()}
                    outs_absent |= bool(states & ABSENT)
                    inputs_changed |= bool(states - ABSENT)
                else:  # changed command, ...
                    inputs_changed = True
        if inputs_changed:
            groups["changed"].append(stage)
        elif outs_absent:
            groups["absent"].append(stage)
        elif outs_modified:
            groups["differing"].append(stage)
    return groups


def main() -> int:
    proc = subprocess.run([sys.executable, "-m", "dvc", "status", "--json"], capture_output=True, text=True)
    if proc.returncode != 0:
        print(proc.stderr, file=sys.stderr)
        return proc.returncode
    status = json.loads(proc.stdout or "{}")
    groups = classify(status)
    if not status:
        print("dvc status: clean (every stage's deps, params and outputs match dvc.lock)")
        return 0
    print(
        f"dvc status: {len(status)} stage(s) differ from dvc.lock: "
        f"{len(groups['absent'])} lack outputs this workspace does not hold (a fresh clone has git's files only: "
        f"`make reproduce` builds them, `dvc pull` fetches them from a remote you pushed to); "
        f"{len(groups['changed'])} have changed code, params, command or inputs (rerun them); "
        f"{len(groups['differing'])} hold other outputs than dvc.lock records (e.g. trained on another CPU)"
    )
    if "-v" in sys.argv[1:]:
        for name, stages in groups.items():
            if stages:
                print(f"  {name}: {' '.join(sorted(stages))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
