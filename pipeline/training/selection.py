"""The tune stage's choice and how the train stage takes it up.

:func:`select` picks the grid point with the best validation metric; ``selected.json`` records it
(:func:`read_selected`); the train stage runs every seed with that setting and, for the seed the
grid was trained with, copies the selected point's run instead of training it again
(:func:`reuse_selected_run`: same config and seed, so the same bytes).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from pipeline.io import atomic_path, read_json
from pipeline.plan import RUN_FILES

SELECTED_FILE = "selected.json"


def select(points: list[dict], results: list[dict], metric: str) -> int:
    """Index of the point with the highest validation ``metric`` (the first one on ties)."""
    values = [r["valid"][metric] for r in results]
    return max(range(len(points)), key=lambda i: (values[i], -i))


def read_selected(path: str | Path) -> dict:
    """The setting a tune stage selected (``selected.json``'s ``hyper``)."""
    return dict(read_json(path)["hyper"])


def reuse_selected_run(selected_path: str | Path, split: str, variant: str, seed: int, out_dir: str | Path, timing_path: Path) -> dict | None:
    """For the seed the grid was trained with, copy the selected point's run folder to ``out_dir``
    (atomically, file by file) and return its metrics; None for any other seed."""
    selected = read_json(selected_path)
    if int(selected["seed"]) != int(seed) or (selected["split"], selected["variant"]) != (split, variant):
        return None
    point = Path(selected_path).parent / f"point{selected['point']}"
    if read_json(point / "hyper.json") != selected["hyper"] or not all((point / f).exists() for f in RUN_FILES):
        raise FileNotFoundError(f"{point}: the selected grid run is incomplete; run the tune stage again")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name in RUN_FILES:
        with atomic_path(out / name) as tmp:
            shutil.copyfile(point / name, tmp)
    timing = Path("logs") / "timing" / f"{split}_{variant}_tune_point{selected['point']}.json"
    if timing.exists():
        timing_path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(timing_path) as tmp:
            shutil.copyfile(timing, tmp)
    return read_json(out / "metrics.json")
