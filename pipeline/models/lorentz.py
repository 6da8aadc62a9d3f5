"""Hyperbolic (Lorentz) geometry and the stage-1 artifact of HDRM.

HDRM (Yuan et al., WWW 2025, arXiv 2504.01541) runs its diffusion on frozen user and item
embeddings learnt beforehand by a hyperbolic LightGCN trained HGCF-style (Sun et al., WWW 2021,
"HGCF: Hyperbolic Graph Convolution Networks for Collaborative Filtering"). The released HDRM
repository's HEAD loads those pre-trained weights; the stage's training code is in its history
only (committed and deleted the same day, commit 2952fbd, ``hdrm/DDRM_LightGCN/``), and
:mod:`pipeline.models.hgcf` follows its recipe. Here:

* this module: the Lorentz (hyperboloid) model with curvature -1 (geoopt's ``Lorentz(k=1)``):
  points x in R^{d+1} with <x, x>_L = -x_0^2 + x_1^2 + ... + x_d^2 = -1, x_0 > 0; the maps to and
  from the tangent space at the origin o = (1, 0, ..., 0) are geoopt's ``expmap0`` / ``logmap0``
  (never hand-written), squared distance d^2(x, y) = arcosh(-<x, y>_L)^2; and the stage-1
  artifact, two float32 arrays of hyperboloid points, ``user_emb.npy`` (n_users, emb_size) and
  ``item_emb.npy`` (n_items, emb_size), which :func:`load_hyperbolic_embeddings` reads and checks
  for HDRM (``hyperbolic=`` side input);
* the model, :class:`pipeline.models.hgcf.HGCF` (trained by the shared trainer);
* the embed stage (``python -m pipeline embed --model hgcf``, ``pipeline/stages/embed.py``), which
  writes the points of its train run's best validation state.

``emb_size`` counts the ambient coordinates, the time coordinate x_0 included (as in the released
code, where a 512-d embedding table is a point of the 511-dimensional hyperboloid).
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

with warnings.catch_warnings():  # geoopt 0.5.1 decorates with torch.jit.script, deprecated in torch 2.13
    warnings.simplefilter("ignore", DeprecationWarning)
    import geoopt
    from geoopt.manifolds.lorentz.math import arcosh

USER_FILE = "user_emb.npy"
ITEM_FILE = "item_emb.npy"
SQDIST_CLAMP = 50.0  # HGCF / HDRM clamp the squared distance at 50 in the ranking loss
ON_MANIFOLD_ATOL = 1e-3  # relative tolerance of <x, x>_L = -1 when loading float32 points

# Curvature -1. Kept out of every nn.Module on purpose: geoopt's manifold is a module with a
# (frozen) parameter k, which would otherwise show up in parameters() and state dicts.
LORENTZ = geoopt.Lorentz(k=1.0)


# ------------------------------------------------------------------------------ geometry
def _unoptimized_jit(fn):
    """Run geoopt's TorchScript functions without the profiling executor.

    Once a scripted function has been differentiated, the optimised executor returns outputs that
    require grad (with a graph) even for inputs that do not, so a tensor computed once and kept
    (a frozen buffer) would drag a freed graph into the next backward pass. The plain interpreter
    gives ordinary autograd semantics (and was faster on 2 CPU cores in our measurement).
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with torch.jit.optimized_execution(False):
            return fn(*args, **kwargs)

    return wrapper


def to_tangent0(u: torch.Tensor) -> torch.Tensor:
    """Project an ambient vector onto the tangent space at the origin (zero time coordinate)."""
    return torch.cat([torch.zeros_like(u[..., :1]), u[..., 1:]], dim=-1)


@_unoptimized_jit
def expmap0(u: torch.Tensor) -> torch.Tensor:
    """Point on the hyperboloid reached from the origin along u (its time coordinate ignored,
    as the released ``expmap0`` does); geoopt's map, projected back onto the manifold."""
    return LORENTZ.expmap0(to_tangent0(u))


@_unoptimized_jit
def logmap0(x: torch.Tensor) -> torch.Tensor:
    """Tangent vector at the origin pointing to x (time coordinate 0); geoopt's map."""
    return LORENTZ.logmap0(x)


@_unoptimized_jit
def projx(x: torch.Tensor) -> torch.Tensor:
    """Back onto the hyperboloid: x_0 = sqrt(1 + |x_1..d|^2) (the released ``proj``)."""
    return LORENTZ.projx(x)


@_unoptimized_jit
def sqdist(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Squared Lorentz distance of paired rows, geoopt's ``dist2``."""
    return LORENTZ.dist2(x, y)


@_unoptimized_jit
def pairwise_sqdist(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Squared distances of every row of x (B, D) to every row of y (N, D): (B, N).

    The Minkowski products of all pairs in one matrix product (-x_0 y_0 + x_s . y_s) instead of
    the released per-user loop; then the same arcosh (geoopt's, computed in float64) as ``dist``.
    """
    inner = torch.addmm(-(x[:, :1] * y[:, 0].unsqueeze(0)), x[:, 1:], y[:, 1:].T)
    k = LORENTZ.k.to(device=x.device, dtype=x.dtype)
    return k * arcosh(-inner / k) ** 2


def minkowski_norm2(x: torch.Tensor) -> torch.Tensor:
    """<x, x>_L per row (-1 on the manifold)."""
    return -x[..., 0] ** 2 + (x[..., 1:] ** 2).sum(-1)


# ------------------------------------------------------------------------------ artifact
@dataclass(frozen=True)
class HyperbolicEmbeddings:
    """Stage-1 output: points on the hyperboloid, float32, one row per user / item."""

    users: np.ndarray  # (n_users, emb_size)
    items: np.ndarray  # (n_items, emb_size)


def check_points(name: str, points: np.ndarray, rows: int | None = None) -> None:
    """Raise ValueError unless ``points`` is a finite 2-D float array of hyperboloid points."""
    if points.ndim != 2 or not np.issubdtype(points.dtype, np.floating) or points.shape[1] < 2:
        raise ValueError(f"{name}: expected a 2-D float array (rows x emb_size >= 2), got {points.dtype} {points.shape}")
    if rows is not None and points.shape[0] != rows:
        raise ValueError(f"{name}: has {points.shape[0]} rows, expected {rows}")
    if not np.isfinite(points).all():
        raise ValueError(f"{name}: holds NaN or infinite values")
    x = points.astype(np.float64)
    form = -x[:, 0] ** 2 + (x[:, 1:] ** 2).sum(1)
    off = np.abs(form + 1.0) / np.maximum(1.0, x[:, 0] ** 2)
    if (x[:, 0] <= 0).any() or (off > ON_MANIFOLD_ATOL).any():
        raise ValueError(f"{name}: rows are not points of the hyperboloid <x, x>_L = -1, x_0 > 0 (worst {off.max():.2e})")


def load_hyperbolic_embeddings(folder: str | Path, n_users: int | None = None, n_items: int | None = None) -> HyperbolicEmbeddings:
    """Read ``user_emb.npy`` and ``item_emb.npy`` from ``folder`` (written by
    :func:`pipeline.stages.embed.main`), checking shapes, finiteness and the manifold constraint."""
    folder = Path(folder)
    users = np.load(folder / USER_FILE, allow_pickle=False)
    items = np.load(folder / ITEM_FILE, allow_pickle=False)
    check_points(str(folder / USER_FILE), users, n_users)
    check_points(str(folder / ITEM_FILE), items, n_items)
    if users.shape[1] != items.shape[1]:
        raise ValueError(f"{folder}: user and item embeddings differ in size ({users.shape[1]} vs {items.shape[1]})")
    return HyperbolicEmbeddings(users.astype(np.float32), items.astype(np.float32))
