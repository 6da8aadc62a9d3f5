"""Hyperbolic (Lorentz) geometry and HDRM's stage 1: hyperbolic LightGCN embeddings.

HDRM (Yuan et al., WWW 2025, arXiv 2504.01541) runs its diffusion on frozen user and item
embeddings learnt beforehand by a hyperbolic LightGCN trained HGCF-style (Sun et al., WWW 2021,
"HGCF: Hyperbolic Graph Convolution Networks for Collaborative Filtering"). The released HDRM
repository loads those pre-trained weights and does not contain the stage's code; this module
is that stage, the way :mod:`pipeline.embeddings` is L-DiffRec's LightGCN stage:

* the Lorentz (hyperboloid) model with curvature -1 (geoopt's ``Lorentz(k=1)``):
  points x in R^{d+1} with <x, x>_L = -x_0^2 + x_1^2 + ... + x_d^2 = -1, x_0 > 0; the maps to and
  from the tangent space at the origin o = (1, 0, ..., 0) are geoopt's ``expmap0`` / ``logmap0``
  (never hand-written), squared distance d^2(x, y) = arcosh(-<x, y>_L)^2;
* the model itself, :class:`pipeline.models.hgcf.HGCF` (trained by the shared trainer);
* :func:`train_hyperbolic_embeddings` trains it on a split and writes the final embeddings of
  the best validation state as two float32 arrays of hyperboloid points,
  ``user_emb.npy`` (n_users, emb_size) and ``item_emb.npy`` (n_items, emb_size);
  :func:`load_hyperbolic_embeddings` reads and checks them for HDRM (``hyperbolic=`` side input).

``emb_size`` counts the ambient coordinates, the time coordinate x_0 included (as in the released
code, where a 512-d embedding table is a point of the 511-dimensional hyperboloid).
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

with warnings.catch_warnings():  # geoopt 0.5.1 decorates with torch.jit.script, deprecated in torch 2.13
    warnings.simplefilter("ignore", DeprecationWarning)
    import geoopt
    from geoopt.manifolds.lorentz.math import arcosh

MODEL_NAME = "hgcf"
USER_FILE = "user_emb.npy"
ITEM_FILE = "item_emb.npy"
SQDIST_CLAMP = 50.0  # HGCF / HDRM clamp the squared distance at 50 in the ranking loss
MAX_RESAMPLE_ROUNDS = 20  # negative sampling: rejection rounds, then a draw from the complement
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


# ------------------------------------------------------------------------------ graph
def row_normalized_adjacency(train: sp.spmatrix) -> sp.csr_matrix:
    """D^-1 (A + I) of the bipartite graph A = [[0, R], [R^T, 0]] (users first), R binarised:
    HGCF's and HDRM's ``normalize(adj + eye)``. Every row sums to 1 (self-loops: no zero row)."""
    r = sp.csr_matrix(train, dtype=np.float64)
    r.data[:] = 1.0
    a = sp.bmat([[None, r], [r.T, None]], format="csr") + sp.eye(sum(r.shape), format="csr")
    degree = np.asarray(a.sum(axis=1)).ravel()
    out = (sp.diags(1.0 / degree) @ a).tocsr().astype(np.float32)
    out.sort_indices()
    return out


def _torch_csr(m: sp.csr_matrix) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(
            torch.from_numpy(m.indptr.astype(np.int64)),
            torch.from_numpy(m.indices.astype(np.int64)),
            torch.from_numpy(m.data.astype(np.float32)),
            size=m.shape,
        )


class SparseOperator:
    """A fixed sparse matrix A (and A^T for the backward pass) as a differentiable product A @ X.

    On the CPU the product runs through scipy (faster than torch's sparse CSR kernel on 2 cores,
    and deterministic); elsewhere through torch sparse CSR tensors, moved with :meth:`to`.
    """

    def __init__(self, a: sp.csr_matrix):
        self.cpu = a.tocsr().astype(np.float32)
        self.cpu_t = self.cpu.T.tocsr()
        self.cpu_t.sort_indices()
        self.dev: torch.Tensor | None = None
        self.dev_t: torch.Tensor | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return self.cpu.shape

    def _product(self, transpose: bool, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cpu":
            m = self.cpu_t if transpose else self.cpu
            out = m @ x.detach().to(torch.float32).contiguous().numpy()
            return torch.from_numpy(np.ascontiguousarray(out)).to(x.dtype)
        if self.dev is None or self.dev.device != x.device:
            self.dev, self.dev_t = _torch_csr(self.cpu).to(x.device), _torch_csr(self.cpu_t).to(x.device)
        return ((self.dev_t if transpose else self.dev) @ x.float()).to(x.dtype)

    def __matmul__(self, x: torch.Tensor) -> torch.Tensor:
        return _SparseMatmul.apply(self, x)


class _SparseMatmul(torch.autograd.Function):
    @staticmethod
    def forward(ctx, op: SparseOperator, x: torch.Tensor) -> torch.Tensor:
        ctx.op = op
        return op._product(False, x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return None, ctx.op._product(True, grad)


# ------------------------------------------------------------------------------ sampling
def sample_pairs(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(batch row, positive item, negative item) for every nonzero of the dense batch ``rows``.

    Pairs come in row-major order (grouped by batch row, items ascending). The negative is uniform
    over the row's zero entries: drawn uniformly over all items with torch's global generator and
    re-drawn where it hits a nonzero (at most MAX_RESAMPLE_ROUNDS rounds, then an exact draw from
    the row's complement); pairs of a row without any zero entry are dropped.
    """
    observed = rows > 0
    b, pos = observed.nonzero(as_tuple=True)
    n_items = rows.shape[1]
    neg = torch.randint(n_items, (len(b),), device=rows.device)
    bad = observed[b, neg]
    for _ in range(MAX_RESAMPLE_ROUNDS):
        where = bad.nonzero().squeeze(1)
        if len(where) == 0:
            break
        neg[where] = torch.randint(n_items, (len(where),), device=rows.device)
        bad[where] = observed[b[where], neg[where]]
    if bool(bad.any()):
        where = bad.nonzero().squeeze(1)
        free = (~observed[b[where]]).float()
        has_free = free.sum(1) > 0
        drawn = torch.full((len(where),), -1, dtype=torch.long, device=rows.device)
        if bool(has_free.any()):
            drawn[has_free] = torch.multinomial(free[has_free], 1).squeeze(1)
        neg[where] = drawn
        keep = neg >= 0
        b, pos, neg = b[keep], pos[keep], neg[keep]
    return b, pos, neg


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
    :func:`train_hyperbolic_embeddings`), checking shapes, finiteness and the manifold constraint."""
    folder = Path(folder)
    users = np.load(folder / USER_FILE, allow_pickle=False)
    items = np.load(folder / ITEM_FILE, allow_pickle=False)
    check_points(str(folder / USER_FILE), users, n_users)
    check_points(str(folder / ITEM_FILE), items, n_items)
    if users.shape[1] != items.shape[1]:
        raise ValueError(f"{folder}: user and item embeddings differ in size ({users.shape[1]} vs {items.shape[1]})")
    return HyperbolicEmbeddings(users.astype(np.float32), items.astype(np.float32))


def train_hyperbolic_embeddings(params: dict, split: str, data_dir: str, out_dir: str, seed: int | None = None) -> dict:
    """Train HGCF (``models.hgcf``) on ``data_dir`` with the shared trainer (seed ``seed``, default
    ``params['embeddings']['seed']``) into ``out_dir``; writes the run folder plus the best
    state's ``user_emb.npy`` and ``item_emb.npy``; returns the metrics."""
    from pipeline.data.dataset import load_interactions
    from pipeline.embeddings import write_embeddings
    from pipeline.training.checkpoint import load_checkpoint
    from pipeline.training.run import fit  # here: the model module imports this one

    seed = int(params["embeddings"]["seed"]) if seed is None else int(seed)
    out = Path(out_dir)
    data = load_interactions(data_dir)
    tag = f"{split} hgcf-embeddings seed {seed}"
    timing_path = Path("logs") / "timing" / f"{split}_hgcf-embeddings.json"
    model, metrics = fit(params, split, MODEL_NAME, seed, data, out, tag, timing_path)
    best = load_checkpoint(out / "model.pt", made_by="embed-hyperbolic")
    model.load_state_dict(best["model"])
    users, items = model.final_embeddings()
    write_embeddings(out / USER_FILE, users.numpy())
    write_embeddings(out / ITEM_FILE, items.numpy())
    k = params["training"]["select_metric"]
    print(
        f"[{tag}] best epoch {metrics['best_epoch']}: valid {k} {metrics['valid'][k]:.4f}, test {k} "
        f"{metrics['test'][k]:.4f}; wrote {out / USER_FILE} {tuple(users.shape)} and {out / ITEM_FILE} {tuple(items.shape)}",
        flush=True,
    )
    return metrics
