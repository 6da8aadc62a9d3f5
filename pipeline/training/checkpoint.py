"""Checkpoints: plain dictionaries of state, written atomically, loaded with weights_only=True.

A checkpoint records a fingerprint of everything that determines the run (model name, split,
seed, hyperparameters, training block); loading one made under another configuration raises
:class:`CheckpointMismatch` instead of silently mixing two runs, and a file torch cannot load
(truncated, overwritten) raises :class:`CorruptCheckpoint`, naming the file.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch

from pipeline.io import ArtifactError, atomic_path


class CheckpointMismatch(RuntimeError):
    """A checkpoint written under another configuration (its fingerprint differs)."""


class CorruptCheckpoint(ArtifactError):
    """A checkpoint file torch cannot load; the message names the file."""


def fingerprint(run_identity: dict[str, Any]) -> str:
    blob = json.dumps(run_identity, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()


def canonical(obj: Any) -> Any:
    """A copy of a state tree (dicts, lists, tuples) whose strings are all interned.

    Pickle memoises objects by identity: two equal strings are written once when they are the
    same object and twice when they are not. A state rebuilt from a resumed checkpoint holds
    equal but distinct string objects where a fresh run shares them, so without this the same
    state could be written as different bytes. With every string interned, equal strings are
    always the same object, and the bytes depend on the content only. A tensor is written
    row-major: one stored otherwise (the column-major first-layer weights of the fast path,
    ``pipeline/models/fast/sparse_input.py``, and their optimizer moments) is copied, so that the
    file holds the values in the layout they would have had; other tensors are not copied.
    """
    if isinstance(obj, torch.Tensor):
        return obj if obj.is_contiguous() else obj.contiguous()
    if isinstance(obj, str):
        return sys.intern(obj)
    if isinstance(obj, OrderedDict):
        out = OrderedDict((canonical(k), canonical(v)) for k, v in obj.items())
        if hasattr(obj, "_metadata"):  # module state dicts carry their version metadata
            out._metadata = canonical(obj._metadata)
        return out
    if isinstance(obj, dict):
        return {canonical(k): canonical(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [canonical(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(canonical(v) for v in obj)
    return obj


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        # a file handle, not a path: torch names the zip's root folder after a path's stem,
        # which would put the random temporary name into the bytes
        torch.save(canonical(state), fh)


def load_checkpoint(path: str | Path, expected_fingerprint: str | None = None, made_by: str | None = None) -> dict[str, Any]:
    """The state saved at ``path``. ``made_by``: the stage that writes the file, named in the
    :class:`CorruptCheckpoint` error (to rerun) when the file cannot be loaded."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as err:  # damaged bytes surface as RuntimeError, EOFError, OSError, UnpicklingError, ...
        rerun = f"; it is made by the `{made_by}` stage: delete it and rerun {made_by}" if made_by else ""
        raise CorruptCheckpoint(f"{path} is not a readable checkpoint ({type(err).__name__}: {err}){rerun}") from err
    if expected_fingerprint is not None and state.get("fingerprint") != expected_fingerprint:
        raise CheckpointMismatch(
            f"checkpoint {path} was written by another configuration "
            f"(its fingerprint {str(state.get('fingerprint'))[:12]}…, this run {expected_fingerprint[:12]}…); "
            "refusing to load it"
        )
    return state
