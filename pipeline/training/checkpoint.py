"""Checkpoints: plain dictionaries of state, written atomically, loaded with weights_only=True.

A checkpoint records a fingerprint of everything that determines the run (model name, split,
seed, hyperparameters, training block); loading one made under another configuration raises
:class:`CheckpointMismatch` instead of silently mixing two runs.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from pipeline.io import atomic_path


class CheckpointMismatch(RuntimeError):
    """A checkpoint written under another configuration (its fingerprint differs)."""


def fingerprint(run_identity: dict[str, Any]) -> str:
    blob = json.dumps(run_identity, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        # a file handle, not a path: torch names the zip's root folder after a path's stem,
        # which would put the random temporary name into the bytes
        torch.save(state, fh)


def load_checkpoint(path: str | Path, expected_fingerprint: str | None = None) -> dict[str, Any]:
    state = torch.load(path, map_location="cpu", weights_only=True)
    if expected_fingerprint is not None and state.get("fingerprint") != expected_fingerprint:
        raise CheckpointMismatch(
            f"checkpoint {path} was written by another configuration "
            f"(its fingerprint {str(state.get('fingerprint'))[:12]}…, this run {expected_fingerprint[:12]}…); "
            "refusing to load it"
        )
    return state
