"""Neural pieces shared by the models: dropout, initialisation, timestep embeddings, a Gaussian
log-likelihood, a sparse graph operator, graph normalisation and a negative sampler.

Each is written once here and imported by the model files (``pipeline/models/<model>.py``).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

MAX_RESAMPLE_ROUNDS = 20  # negative sampling: rejection rounds, then a draw from the complement
LOG_2PI = math.log(2.0 * math.pi)


# ------------------------------------------------------------------------------ layers
def log_unit_normal(x: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """log N(x; mean, I) of each row: -n/2 log 2 pi - |x - mean|^2 / 2 (n columns)."""
    diff = x - mean
    return -0.5 * x.shape[1] * LOG_2PI - 0.5 * (diff * diff).sum(1)


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Inverted dropout (keep with prob. 1-p, scale by 1/(1-p)), only in training mode.

    Same distribution as ``nn.Dropout``; the mask comes from ``torch.rand`` because
    ``bernoulli_`` took a sixth of an ML-1M DiffRec epoch on 2 CPU cores.
    """
    if not training or p == 0.0:
        return x
    keep = torch.rand_like(x) >= p
    return (x * keep).div_(1.0 - p)  # = x * keep / (1 - p), in place


def xavier_normal_(layer: nn.Linear) -> None:
    """DiffRec's init: weights N(0, sqrt(2 / (fan_in + fan_out))), biases N(0, 0.001)."""
    fan_out, fan_in = layer.weight.shape
    nn.init.normal_(layer.weight, 0.0, math.sqrt(2.0 / (fan_in + fan_out)))
    nn.init.normal_(layer.bias, 0.0, 0.001)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding [cos, sin] of the timesteps, as in DiffRec's DNN."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t[:, None].float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


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


def to_torch_csr(m: sp.csr_matrix) -> torch.Tensor:
    """A scipy CSR matrix as a float32 torch sparse CSR tensor (its invariants checked), with
    32-bit indices where they fit: torch's CPU product hands a CSR matrix to MKL's sparse kernel
    with 32-bit indices and converts 64-bit ones at every call (a copy of the indices a product;
    the same kernel, the same result)."""
    index = np.int32 if max(m.nnz, *m.shape) < np.iinfo(np.int32).max else np.int64
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(
            torch.from_numpy(m.indptr.astype(index)),
            torch.from_numpy(m.indices.astype(index)),
            torch.from_numpy(m.data.astype(np.float32)),
            size=m.shape,
            check_invariants=True,
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
            self.dev, self.dev_t = to_torch_csr(self.cpu).to(x.device), to_torch_csr(self.cpu_t).to(x.device)
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


def user_uniform_triples(matrix: sp.spmatrix, n: int | None = None, generator: torch.Generator | None = None
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n`` (user, positive, negative) triples drawn as the released samplers of HGCF and HDRM
    draw an epoch (LightGCN-PyTorch's ``UniformSample_original``): a user uniformly, one of its
    train items uniformly, one item uniformly redrawn while it is a train item of that user.
    ``n`` defaults to the number of train pairs (the released ``trainDataSize``). Int64 tensors
    on the CPU, from ``generator`` (torch's global one when None).

    Train items are the entries > 0 of ``matrix``. Users are drawn among those with at least one
    train item and one other item; the released loop draws among all users and skips a draw that
    hits a user without train items, so where such users exist its epoch has fewer triples. The
    negative is redrawn (only the colliding ones) for at most MAX_RESAMPLE_ROUNDS rounds; the few
    left (users who trained on nearly every item) are drawn directly from the user's non-train
    items, which keeps the draw exactly uniform.
    """
    m = sp.csr_matrix(matrix, copy=True)
    m.sum_duplicates()  # also sorts each row's items
    m.data = (m.data > 0).astype(np.float32)
    m.eliminate_zeros()
    n_users, n_items = m.shape
    indptr = torch.from_numpy(m.indptr.astype(np.int64))
    items = torch.from_numpy(m.indices.astype(np.int64))
    degree = indptr[1:] - indptr[:-1]
    n = len(items) if n is None else int(n)
    eligible = ((degree > 0) & (degree < n_items)).nonzero().squeeze(1)
    if n == 0 or len(eligible) == 0:
        empty = torch.zeros(0, dtype=torch.long)
        return empty, empty.clone(), empty.clone()
    users = eligible[torch.randint(len(eligible), (n,), generator=generator)]
    count = degree[users]
    k = torch.floor(torch.rand(n, dtype=torch.float64, generator=generator) * count).long()
    pos = items[indptr[users] + torch.minimum(k, count - 1)]
    owner = torch.repeat_interleave(torch.arange(n_users), degree)
    keys = owner * n_items + items  # sorted: rows in order, items sorted within a row

    def is_train(u: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
        key = u * n_items + i
        at = torch.searchsorted(keys, key).clamp_(max=len(keys) - 1)
        return keys[at] == key

    neg = torch.randint(n_items, (n,), generator=generator)
    bad = is_train(users, neg)
    for _ in range(MAX_RESAMPLE_ROUNDS):
        where = bad.nonzero().squeeze(1)
        if len(where) == 0:
            break
        neg[where] = torch.randint(n_items, (len(where),), generator=generator)
        bad[where] = is_train(users[where], neg[where])
    if bool(bad.any()):
        # the r-th (0-based) non-train item of a user with sorted train items s_0 < s_1 < ... is
        # r + #{k : s_k - k <= r}; the s_k - k are non-decreasing within a row
        where = bad.nonzero().squeeze(1)
        u = users[where]
        gaps = owner * n_items + (items - _local_index(degree))
        free = n_items - degree[u]
        r = torch.floor(torch.rand(len(u), dtype=torch.float64, generator=generator) * free).long()
        r = torch.minimum(r, free - 1)
        below = torch.searchsorted(gaps, u * n_items + r, right=True) - indptr[u]
        neg[where] = r + below
    return users, pos, neg


def _local_index(degree: torch.Tensor) -> torch.Tensor:
    """0, 1, ..., d_u - 1 for every row u in turn (the position of each entry in its row)."""
    starts = torch.cumsum(degree, 0) - degree
    return torch.arange(int(degree.sum())) - torch.repeat_interleave(starts, degree)


def triple_batches(matrix: sp.spmatrix, batch_size: int, generator: torch.Generator | None = None):
    """One epoch of user-uniform triples (:func:`user_uniform_triples`, as many as train pairs),
    in batches of ``batch_size`` (the last one smaller), shaped as the model contract's batches:
    (rows, users, positives, negatives) with ``rows`` of width 0 (the triples' loss reads no
    train row) and ``users`` a NumPy array."""
    users, pos, neg = user_uniform_triples(matrix, generator=generator)
    for start in range(0, len(users), batch_size):
        end = start + batch_size
        yield torch.zeros(len(users[start:end]), 0), users[start:end].numpy(), pos[start:end], neg[start:end]
