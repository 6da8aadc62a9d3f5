"""LightGCN: Simplifying and Powering Graph Convolution Network for Recommendation.

Reference: Xiangnan He, Kuan Deng, Xiang Wang, Yan Li, Yongdong Zhang, Meng Wang.
"LightGCN: Simplifying and Powering Graph Convolution Network for Recommendation". SIGIR 2020.
arXiv:2002.02126. Released code: github.com/gusye1234/LightGCN-PyTorch (and RecBole's
``recbole/model/general_recommender/lightgcn.py``).

In this project LightGCN is a baseline of DiffRec's tables and the source of the item embeddings
that L-DiffRec clusters (``pipeline.stages.embed``). It follows the shared model contract
(``pipeline/models/base.py``); it needs the training graph, so it takes ``data`` by keyword.

Model: ego embeddings E0 (users and items, N(0, 0.1^2) as in the released code); propagation
E_{l+1} = A~ E_l with the symmetric-normalised bipartite adjacency A~ = D^-1/2 A D^-1/2,
A = [[0, R], [R^T, 0]]; the final embeddings are the mean of layers 0..L; score = <e_u, e_i>.

Training (``loss``): the shared trainer hands a batch of users; every train interaction (u, i) of
those users is one BPR pair with one negative drawn uniformly among the items u has not trained
on (vectorised rejection sampling with an exact fallback; torch's global CPU generator, so runs
are seeded and resume exactly). Loss = mean BPR + reg_weight * L2 of the batch's ego embeddings
(1/2 (|e_u|^2 + |e_i+|^2 + |e_i-|^2) averaged over pairs), as in the released code.
Differences from the released code: batches are groups of users (all their pairs) rather than
2048 random pairs; the negative is drawn once per pair in every epoch the same way.

A~ is a :class:`pipeline.models.layers.SparseOperator`, the graph product HGCF and TV-Diff use
too: scipy's CSR kernel on the CPU (deterministic), torch's sparse CSR product elsewhere; its
backward pass multiplies by A~^T, which for this symmetric matrix is A~ itself, bit for bit.
With the speed switch on (``training.fast``) the products run through torch's CSR kernel on both
threads and the loss's gradient is one sparse product (``pipeline/models/fast/lightgcn.py``): the
same function, rounded differently. MF (no layers) takes the loss's fast path for no layers (the
gradient added straight into the two tables) and torch's fused Adam.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.data.dataset import InteractionData
from pipeline.models import checks as c
from pipeline.models import fast
from pipeline.models.base import Recommender
from pipeline.models.fast import lightgcn as fast_lightgcn
from pipeline.models.layers import SparseOperator, to_torch_csr

MAX_RESAMPLE_ROUNDS = 20  # rejection rounds for negatives, then a direct draw from the complement
INIT_STD = 0.1  # LightGCN-PyTorch initialises the embeddings with N(0, 0.1^2)


@dataclass(frozen=True)
class LightGCNConfig:
    emb_size: int = 64  # the released item_emb.npy is 64-d too
    n_layers: int = 3
    lr: float = 0.01  # batches of 256 users (~17k BPR pairs on ML-1M)
    weight_decay: float = 0.0
    reg_weight: float = 1.0e-4
    batch_size: int = 256
    epochs: int = 1000

    def problems(self) -> list[tuple[str | tuple[str, ...], str]]:
        """(key, message) for every impossible value (types are checked before)."""
        out = c.counts(self, "emb_size", "batch_size", "epochs")
        if self.n_layers < 0:
            out.append(("n_layers", f"must be >= 0 (0 = matrix factorisation with BPR), got {self.n_layers}"))
        return out + c.positive(self, "lr") + c.non_negative(self, "weight_decay", "reg_weight")


def normalized_adjacency(train: sp.spmatrix) -> sp.csr_matrix:
    """D^-1/2 A D^-1/2 of the bipartite graph A = [[0, R], [R^T, 0]] (users first, then items).

    R is binarised; nodes without edges get a zero row and column (no division by zero).
    """
    r = sp.csr_matrix(train, dtype=np.float64)
    r.data[:] = 1.0
    a = sp.bmat([[None, r], [r.T, None]], format="csr")
    degree = np.asarray(a.sum(axis=1)).ravel()
    inv_sqrt = np.zeros_like(degree)
    np.power(degree, -0.5, out=inv_sqrt, where=degree > 0)
    d = sp.diags(inv_sqrt)
    out = (d @ a @ d).tocsr().astype(np.float32)
    out.sort_indices()
    return out


class LightGCN(Recommender, key="lightgcn"):
    Config = LightGCNConfig
    display_name = "LightGCN"
    family = "classic"  # the tables' row group: classic, generative or diffusion

    def __init__(self, config: LightGCNConfig, n_users: int, n_items: int, *, data: InteractionData | None = None, **side):
        super().__init__()  # other side inputs (clusters) are not used by LightGCN
        data = self.given_data(data, n_users, n_items)
        self.config = config
        self.n_users, self.n_items = n_users, n_items
        self.user_embedding = nn.Embedding(n_users, config.emb_size)
        self.item_embedding = nn.Embedding(n_items, config.emb_size)
        nn.init.normal_(self.user_embedding.weight, 0.0, INIT_STD)
        nn.init.normal_(self.item_embedding.weight, 0.0, INIT_STD)
        # the graph: not a parameter and not in the state dict (rebuilt from the data)
        self.adjacency = SparseOperator(normalized_adjacency(data.train))
        train = sp.csr_matrix(data.train)
        train.sort_indices()
        # CSR of the train matrix on the CPU, for pair and negative sampling with the CPU generator
        self._indptr = torch.from_numpy(train.indptr.astype(np.int64))
        self._indices = torch.from_numpy(train.indices.astype(np.int64))
        rows = np.repeat(np.arange(n_users, dtype=np.int64), np.diff(train.indptr))
        self._train_keys = torch.from_numpy(rows * n_items + train.indices.astype(np.int64))  # sorted
        self._gap_keys: torch.Tensor | None = None  # built on first need by _complement_draw
        self._cache: tuple | None = None
        self._csr: torch.Tensor | None = None  # the fast path's A~ as a torch CSR tensor

    # ------------------------------------------------------------------ contract

    def optimizer(self) -> torch.optim.Optimizer:
        # without layers (MF) torch's fused Adam on the fast path (pipeline/models/fast); LightGCN keeps
        # the per-tensor one its committed runs, and the L-DiffRec clusters made from them, were trained with
        fused = fast.fused_optimizer() if self.config.n_layers == 0 else None
        return torch.optim.Adam(self.parameters(), lr=self.config.lr, weight_decay=self.config.weight_decay, fused=fused)

    def loss(self, rows: torch.Tensor, users: np.ndarray) -> torch.Tensor:
        pair_users, pos, neg = self.sample_pairs(users)
        device = self.user_embedding.weight.device
        pair_users, pos, neg = pair_users.to(device), pos.to(device), neg.to(device)
        if fast.enabled() and len(pair_users) > 0:
            final = self._fast_final() if self.config.n_layers else None  # None: the ego tables (MF)
            return fast_lightgcn.bpr_loss(final, self.user_embedding.weight, self.item_embedding.weight,
                                          pair_users, pos, neg, self.config.reg_weight)
        user_final, item_final = self.propagate()
        if len(pair_users) == 0:  # no train interaction in this batch: a zero that still backpropagates
            return (user_final.sum() + item_final.sum()) * 0.0
        u, p, n = user_final[pair_users], item_final[pos], item_final[neg]
        bpr = F.softplus((u * n).sum(1) - (u * p).sum(1)).mean()  # -log sigmoid(s_pos - s_neg)
        ego_u = self.user_embedding.weight[pair_users]
        ego_p, ego_n = self.item_embedding.weight[pos], self.item_embedding.weight[neg]
        reg = 0.5 * (ego_u.pow(2).sum() + ego_p.pow(2).sum() + ego_n.pow(2).sum()) / len(pair_users)
        return bpr + self.config.reg_weight * reg

    @torch.no_grad()
    def scores(self, rows: torch.Tensor | None, users: np.ndarray) -> torch.Tensor:
        user_final, item_final = self._propagated_cached()
        idx = torch.as_tensor(np.asarray(users), dtype=torch.long, device=user_final.device)
        return user_final[idx] @ item_final.T

    @torch.no_grad()
    def final_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The final (propagated, layer-mean) embeddings in eval mode, (users (U, d), items (I, d))
        float32 on the CPU: the embed stage's output, whose items the cluster stage clusters."""
        was_training = self.training
        self.eval()
        try:
            users, items = self.propagate()
            return users.detach().float().cpu().clone(), items.detach().float().cpu().clone()
        finally:
            self.train(was_training)


    # ------------------------------------------------------------------ internals
    def propagate(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean of the layer embeddings 0..L: (users (U, d), items (I, d))."""
        if self._fast():
            final = self._fast_final()
            return final[: self.n_users], final[self.n_users :]
        ego = torch.cat([self.user_embedding.weight, self.item_embedding.weight], dim=0)
        total, layer = ego, ego
        for _ in range(self.config.n_layers):
            layer = self.adjacency @ layer
            total = total + layer
        final = total / (self.config.n_layers + 1)
        return final[: self.n_users], final[self.n_users :]

    def _fast(self) -> bool:
        """Whether the propagation takes ``pipeline/models/fast/lightgcn.py``'s CSR products: the
        speed switch on and graph layers to propagate through (the loss's fast path needs only the
        switch)."""
        return fast.enabled() and self.config.n_layers > 0

    def _fast_final(self) -> torch.Tensor:
        """``propagate()`` on the fast path, users and items stacked (with graph layers; MF's loss
        reads its tables directly)."""
        ego = torch.cat([self.user_embedding.weight, self.item_embedding.weight], dim=0)
        if self._csr is None or self._csr.device != ego.device or self._csr.dtype != ego.dtype:
            self._csr = to_torch_csr(self.adjacency.cpu).to(device=ego.device, dtype=ego.dtype)
        return fast_lightgcn.layer_mean(ego, self._csr, self.config.n_layers)

    def _propagated_cached(self) -> tuple[torch.Tensor, torch.Tensor]:
        """propagate() without gradients, reused while the weights are unchanged (evaluation
        scores users in chunks; the optimizer step and load_state_dict bump the versions)."""
        w_u, w_i = self.user_embedding.weight, self.item_embedding.weight
        key = (w_u._version, w_i._version, w_u.data_ptr(), w_i.data_ptr(), self.config.n_layers)
        if self._cache is None or self._cache[0] != key:
            with torch.no_grad():
                self._cache = (key, self.propagate())
        return self._cache[1]

    def _is_train(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        keys = users * self.n_items + items
        if len(self._train_keys) == 0:
            return torch.zeros_like(keys, dtype=torch.bool)
        at = torch.searchsorted(self._train_keys, keys).clamp_(max=len(self._train_keys) - 1)
        return self._train_keys[at] == keys

    def sample_pairs(self, users: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(user, positive, negative) per train interaction of ``users``, all int64 on the CPU.

        Positives come straight from the train CSR. Negatives are uniform over the items the user
        has not trained on: drawn uniformly over all items with torch's global generator and
        re-drawn (only the colliding ones) for at most MAX_RESAMPLE_ROUNDS rounds; the few still
        colliding after that (users who trained on nearly every item) are drawn directly from
        the user's complement (:meth:`_complement_draw`), which keeps the draw exactly uniform.
        Pairs of a user who trained on every item have no negative and are dropped.
        """
        u = torch.as_tensor(np.asarray(users), dtype=torch.long)
        start, end = self._indptr[u], self._indptr[u + 1]
        counts = end - start
        total = int(counts.sum())
        pair_users = torch.repeat_interleave(u, counts)
        first = torch.repeat_interleave(start - (torch.cumsum(counts, 0) - counts), counts)
        pos = self._indices[first + torch.arange(total)]
        neg = torch.randint(self.n_items, (total,))
        bad = self._is_train(pair_users, neg)
        for _ in range(MAX_RESAMPLE_ROUNDS):
            n_bad = int(bad.sum())
            if n_bad == 0:
                break
            where = bad.nonzero().squeeze(1)
            neg[where] = torch.randint(self.n_items, (n_bad,))
            bad[where] = self._is_train(pair_users[where], neg[where])
        if bad.any():
            where = bad.nonzero().squeeze(1)
            drawn = self._complement_draw(pair_users[where])
            neg[where] = drawn
            if (drawn < 0).any():
                keep = neg >= 0
                pair_users, pos, neg = pair_users[keep], pos[keep], neg[keep]
        return pair_users, pos, neg

    def _complement_draw(self, users: torch.Tensor) -> torch.Tensor:
        """One item per entry, uniform over the items the user has not trained on (-1 if none).

        The r-th (0-based) non-train item of a user with sorted train items s_0 < s_1 < ... is
        r + #{k : s_k - k <= r}; the s_k - k are non-decreasing within a row, so one global
        searchsorted over user * n_items + (s_k - k) counts them for every entry at once.
        """
        if self._gap_keys is None:
            local = torch.arange(len(self._indices)) - torch.repeat_interleave(
                self._indptr[:-1], self._indptr[1:] - self._indptr[:-1]
            )
            rows = torch.repeat_interleave(torch.arange(self.n_users), self._indptr[1:] - self._indptr[:-1])
            self._gap_keys = rows * self.n_items + (self._indices - local)
        free = self.n_items - (self._indptr[users + 1] - self._indptr[users])
        r = torch.floor(torch.rand(len(users), dtype=torch.float64) * free).long()
        r = torch.minimum(r, (free - 1).clamp(min=0))
        below = torch.searchsorted(self._gap_keys, users * self.n_items + r, right=True) - self._indptr[users]
        return torch.where(free > 0, r + below, torch.full_like(r, -1))
