"""workflow/scripts/dvc_status.py: `dvc status --json` grouped by cause."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("dvc_status", ROOT / "workflow" / "scripts" / "dvc_status.py")
dvc_status = importlib.util.module_from_spec(spec)
spec.loader.exec_module(dvc_status)


def test_stages_are_grouped_by_cause():
    status = {  # the shapes `dvc status --json` prints
        "prepare@ml-1m_clean": [{"changed outs": {"data/prepared/ml-1m_clean": "not in cache"}}],
        "train@a": [{"changed outs": {"runs/a": "deleted"}}],
        "aggregate": [{"changed deps": {"pipeline/reporting": "modified"}}, {"changed outs": {"results/x": "deleted"}}],
        "significance": ["changed checksum"],
        "cmd": [{"changed command": True}],
        "train@b": [{"changed outs": {"runs/b": "modified"}}],
        # a fresh clone: the upstream output is absent too
        "train@c": [{"changed deps": {"data/prepared/x/stats.json": "deleted"}},
                    {"changed outs": {"runs/c/model.pt": "not in cache"}}],
        "train@d": [{"changed deps": {"params.yaml": {"models.d": "modified"}}}],
    }
    assert dvc_status.classify(status) == {
        "absent": ["prepare@ml-1m_clean", "train@a", "train@c"],
        "changed": ["aggregate", "significance", "cmd", "train@d"],  # a changed input outweighs absent outputs
        "differing": ["train@b"],
    }
    assert dvc_status.classify({}) == {"absent": [], "changed": [], "differing": []}
