"""The embed stage: the item vectors L-DiffRec clusters, and HDRM's stage-1 points.

:func:`main` (``python -m pipeline embed --model M --run runs/<split>/M/seed<s>``) trains nothing:
it rebuilds the embedding model (a variant of a class in ``pipeline.plan.EMBED_CLASSES``) on the
split's graph, loads the best state of its train run (seed ``embeddings.seed``,
``pipeline.plan.embed_source``; the train stage made it, so the run is trained once whether or not
the tables show it) and writes its final user and item embeddings, ``user_emb.npy`` and
``item_emb.npy`` (float32, the model's ``final_embeddings()``): LightGCN's (``models.lightgcn``)
propagated vectors, whose items the cluster stage clusters; HGCF's (``models.hgcf``, or another
HGCF variant a HDRM variant names as its ``embeddings``: HDRM's stage 1) points of the
hyperboloid, which HDRM reads (:func:`pipeline.models.lorentz.load_hyperbolic_embeddings`). The
authors' released item vectors come in through the import-embeddings stage
(``pipeline/stages/import_embeddings.py``).
"""

from __future__ import annotations

from pathlib import Path

from pipeline.data.dataset import load_interactions
from pipeline.io import write_embeddings
from pipeline.plan import EMBED_FILES, embed_models, grid_key, is_tuned
from pipeline.training.checkpoint import load_checkpoint
from pipeline.training.fitting import build_model
from pipeline.training.selection import read_selected


def main(params: dict, split: str, model_name: str, data_dir: str, run_dir: str, out_dir: str,
         tuned_path: str | None = None) -> dict[str, tuple[int, ...]]:
    """Export the final embeddings of the train run ``run_dir`` of ``models.<model_name>`` on
    ``data_dir`` (``tuned_path``: the tune stage's selected.json, for a variant with a grid) into
    ``out_dir``; returns the shape of each file written."""
    if model_name not in embed_models(params):
        raise ValueError(f"the embed stage exports the embedding models {embed_models(params)}, not {model_name!r}")
    if is_tuned(params, model_name, split) != bool(tuned_path):
        raise ValueError(f"model variant {model_name!r}: pass --tuned runs/{split}/{model_name}/tuning/selected.json "
                         f"exactly when it has a grid on {split} ({grid_key(params, model_name, split)})")
    tuned = read_selected(tuned_path) if tuned_path else None
    data = load_interactions(data_dir)
    model = build_model(params, model_name, split, int(params["embeddings"]["seed"]), data.n_users, data.n_items, tuned, data=data)
    model.load_state_dict(load_checkpoint(Path(run_dir) / "model.pt", made_by="train")["model"])
    out = Path(out_dir)
    shapes = {}
    for name, array in zip(EMBED_FILES, model.final_embeddings()):
        write_embeddings(out / name, array.numpy())
        shapes[name] = tuple(array.shape)
    print(f"[{split} {model_name} embeddings] from {run_dir}/model.pt: wrote "
          + " and ".join(f"{out / name} {shape}" for name, shape in shapes.items()), flush=True)
    return shapes
