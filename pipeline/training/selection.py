"""The tune stage's choice.

:func:`select` picks the grid point with the best validation metric; ``selected.json`` records it
(:func:`read_selected`); the train stage runs every seed with that setting (and copies the runs
that already exist with it: ``pipeline.training.reuse``).
"""

from __future__ import annotations

from pathlib import Path

from pipeline.io import read_json

SELECTED_FILE = "selected.json"


def select(points: list[dict], results: list[dict], metric: str) -> int:
    """Index of the point with the highest validation ``metric`` (the first one on ties)."""
    values = [r["valid"][metric] for r in results]
    return max(range(len(points)), key=lambda i: (values[i], -i))


def read_selected(path: str | Path) -> dict:
    """The setting a tune stage selected (``selected.json``'s ``hyper``)."""
    return dict(read_json(path)["hyper"])
