"""The synthesize stage: a synthetic raw source from a preset of params.yaml (``synthetic.presets``).

The generator is :mod:`pipeline.data.synthetic`; this stage writes its table as a RecBole
``.inter`` file that a split can use as ``source: synthetic-<preset>``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from pathlib import Path

from pipeline.data.synthetic import describe, generate, spec_from, write_inter


def main(params: dict, name: str, out_dir: str) -> dict:
    """``python -m pipeline synthesize``: write preset ``name`` to ``out_dir/synthetic-<name>.inter``.

    Beside it, ``SYNTHETIC.json`` holds the spec, :func:`describe`'s numbers and the file's
    SHA-256 (no timestamps: the folder is byte-reproducible). The folder is replaced
    atomically, like a download.
    """
    import shutil
    import tempfile

    from pipeline.io import write_json

    spec = spec_from(name, params)
    start = time.perf_counter()
    table = generate(spec)
    seconds = time.perf_counter() - start
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        path = staging / f"synthetic-{name}.inter"
        write_inter(table, path)
        summary = describe(table)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        write_json(staging / "SYNTHETIC.json", {"name": name, "spec": dataclasses.asdict(spec), "stats": summary,
                                                 "files": [path.name], "sha256": {path.name: digest}})
        if out.is_symlink() or out.is_file():
            out.unlink()
        elif out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    print(
        f"synthesize {name}: {summary['n_users']} users, {summary['n_items']} items, {summary['n_interactions']} "
        f"interactions (top 1% of items hold {100 * summary['top1pct_items_share']:.1f}%) in {seconds:.1f}s -> {out}"
    )
    return summary
