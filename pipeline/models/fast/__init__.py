"""CPU speed-ups of the diffusion models, kept apart from the readable model files, behind one switch.

The model files (``pipeline/models/diffrec.py`` and the models built on its denoiser: T-DiffRec,
L-DiffRec, LT-DiffRec; ``tvdiff.py``; ``hdrm.py``; ``hgcf.py``; ``lightgcn.py`` and MF-BPR;
``codigem.py``; ``cdae.py``, ``multidae.py``, ``multidaepp.py``, ``multivae.py``) are written with plain torch
operations, in the order of the paper and the released code. This package holds faster ways to
compute the same quantities:

* ``linear``: the dense float32 products through oneDNN's kernels, optionally with a weight
  packed once into oneDNN's layout;
* ``diffrec``: DiffRec's denoiser MLP on those products with a first layer that skips a gradient
  nobody needs, and the folded reverse loop that replaces the T denoiser calls of ``scores``.
* ``tvdiff``: TV-Diff's reverse chain folded onto the user tower's first-layer width (its
  ``scores`` in eval mode).
* ``hdrm``: HDRM's denoisers with their activations in place and, for its triple batches, a
  first layer that skips a gradient nobody needs (torch's own products: bit for bit the readable
  path with the user batches of the committed runs).
* ``hgcf``: HDRM's stage 1 (pair batches and the released triples): the graph products
  through torch's CSR kernel (both threads), the margin loss with its gradient written out and
  Riemannian SGD in place.
* ``lightgcn``: LightGCN's graph products through torch's CSR kernel and its BPR gradient as one
  sparse product (the loss for MF, LightGCN without layers, too).
* ``sparse_input``: the first layer of CDAE, MultiDAE, MultiVAE and L-DiffRec's cluster encoders
  on the kept nonzero entries of their sparse input rows (a CSR product), with Adam / AdamW
  fused (:func:`fused_optimizer`); MultiDAE's, MultiVAE's and L-DiffRec's weights there stored
  column-major, so that no product copies their transpose.
* ``codigem``: CODIGEM's decoder trained alone (the network that ranks; its weights bit for bit
  those the whole -ELBO trains), its reverse networks left untrained.
* ``graph``: the CSR product with its gradient through the stored transpose, and the CSR
  matrices the paths above build.

The switch: params.yaml ``training.fast`` (default true), read into
``pipeline.config.TrainingConfig.fast``; ``pipeline.training.fitting.build_model`` sets it for the
process with :func:`set_enabled` before the model is built (so the train, tune and embedding
stages and the benchmarks follow params.yaml, and DVC and Snakemake see it as a parameter of those
stages). Outside a stage, e.g. in a notebook or a test, it is on unless switched off:
``with fast.switched(False): ...`` runs the readable path.

On: the committed results were made this way (bit for bit). Off: every product is torch's own
(``nn.Linear``), tanh is ``torch.tanh`` and ``scores`` runs the T reverse steps one denoiser call
each. Both compute the same function; they differ by float32 rounding only
(``tests/test_fast_paths.py`` checks the loss, gradients and scores of both against each other).
One exception, CODIGEM: its fast path trains only the network that ranks, the same weights bit
for bit, and returns that network's term of the loss (``codigem``'s docstring).
The state dict is the same either way: a model trained with one is loaded and scored with the
other.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

_enabled = True


def enabled() -> bool:
    """Whether the models take the fast paths (read at every call, not at construction)."""
    return _enabled


def fused_optimizer() -> bool | None:
    """The ``fused`` argument of torch's Adam / AdamW for the models whose readable optimizer is
    the per-tensor one: torch's fused kernel (one pass over each tensor instead of one per
    operation) on the fast path, torch's default (``None``) off it."""
    return True if _enabled else None


def set_enabled(on: bool) -> None:
    """Turn the fast paths on or off for this process (``training.fast``)."""
    global _enabled
    _enabled = bool(on)


@contextmanager
def switched(on: bool) -> Iterator[None]:
    """The switch set to ``on`` inside the block, restored after it."""
    before = _enabled
    set_enabled(on)
    try:
        yield
    finally:
        set_enabled(before)
