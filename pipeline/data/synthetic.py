"""Synthetic interaction data with long-tailed item popularity and user activity.

:func:`generate` is a pure, vectorised (numpy) function: the same :class:`SyntheticSpec` gives
the identical table on every machine (with the pinned numpy: numpy does not promise the same
random streams across its versions). It builds a simple bipartite graph (no repeated
(user, item) pair) with exactly ``n_users`` users, ``n_items`` items and ``n_interactions``
edges:

1. Degrees. Users are ranked by a seeded random permutation; the user of rank r (1-based)
   gets ``min_interactions + share_r`` interactions, where the ``n_interactions - n_users *
   min_interactions`` extra interactions are shared in proportion to ``r ** -user_exponent``
   (Zipf / power law), no user above ``MAX_DEGREE_FRACTION * n_items`` (excess is handed on to
   the next ranks), whole numbers by largest remainder. Items likewise with
   ``item_exponent`` and ``MAX_DEGREE_FRACTION * n_users``. Both degree sequences sum to
   ``n_interactions``; every user and every item has at least ``min_interactions``.
2. Edges. The configuration model: one stub per unit of degree on each side, item stubs
   shuffled and paired with the user stubs. Repeated pairs are then removed by
   degree-preserving swaps (a repeated edge (u, i) and a random edge (v, j) become (u, j) and
   (v, i) when neither exists yet), in vectorised rounds until no pair repeats. The result has
   exactly the degree sequences of step 1.
3. Timestamps. User u is active in a window of ``span_days``: start ``s_u`` and length ``l_u``
   with ``l_u / span`` uniform in [0.1, 1] and ``s_u`` uniform in [0, span - l_u]; each of its
   interactions gets a uniform time in the window (whole seconds after ``start``).

With ``min_interactions >= protocol.k_core`` the table is already a k-core, so the prepare stage
keeps every user, item and interaction (there are no ratings: every interaction is a positive,
and the noisy setting adds nothing). The ``synthetic:`` block of ``params.yaml`` holds presets
with the sizes of DiffRec's clean datasets (ML-1M, Yelp, Amazon-book);
``python -m pipeline synthesize --name <preset> --out data/raw/synthetic-<preset>`` writes one as
a RecBole ``.inter`` file (format ``recbole``) and :func:`synthetic_matrix` returns one as a
scipy CSR matrix without touching the disk.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import polars as pl
import scipy.sparse as sp

MAX_DEGREE_FRACTION = 0.5  # no user (item) holds more than this fraction of all items (users)
MAX_SWAP_ROUNDS = 500
DAY_S = 86_400
TABLE_SCHEMA = {"user": pl.Int32, "item": pl.Int32, "timestamp": pl.Int64}
RECBOLE_HEADER = "user_id:token\titem_id:token\ttimestamp:float"


@dataclass(frozen=True)
class SyntheticSpec:
    """Everything :func:`generate` needs (the fields of a ``synthetic.presets.<name>`` block)."""

    n_users: int
    n_items: int
    n_interactions: int
    item_exponent: float = 0.8  # Zipf exponent of item popularity (degree share ~ rank ** -a)
    user_exponent: float = 0.6  # Zipf exponent of user activity
    min_interactions: int = 10  # every user and every item has at least this many
    start: int = 946_684_800  # unix seconds of the earliest possible timestamp (2000-01-01 UTC)
    span_days: int = 1_095  # length of the time range
    seed: int = 0

    def problems(self) -> list[tuple[str, str]]:
        """(field, message) for every constraint the spec breaks; empty when it is valid."""
        out = []
        for name in ("n_users", "n_items", "n_interactions", "min_interactions", "span_days"):
            if getattr(self, name) < 1:
                out.append((name, f"must be >= 1, got {getattr(self, name)}"))
        for name in ("item_exponent", "user_exponent"):
            if getattr(self, name) < 0:
                out.append((name, f"must be >= 0, got {getattr(self, name)}"))
        if out:
            return out
        m, n = self.min_interactions, self.n_interactions
        cap_user = int(MAX_DEGREE_FRACTION * self.n_items)
        cap_item = int(MAX_DEGREE_FRACTION * self.n_users)
        if m > cap_user or m > cap_item:
            out.append(("min_interactions", f"{m} is above {MAX_DEGREE_FRACTION} x n_items ({cap_user}) or "
                        f"{MAX_DEGREE_FRACTION} x n_users ({cap_item})"))
        low = max(self.n_users, self.n_items) * m
        high = min(self.n_users * cap_user, self.n_items * cap_item)
        if not low <= n <= high:
            out.append(("n_interactions", f"{n} is outside [{low}, {high}]: at least min_interactions per user and "
                        f"item, at most {MAX_DEGREE_FRACTION} x the other side per user and item"))
        return out


def spec_from(preset: str | SyntheticSpec | Mapping[str, Any], params: dict | None = None) -> SyntheticSpec:
    """A spec from a preset name (looked up in ``params['synthetic']['presets']``), a mapping or a spec."""
    if isinstance(preset, str):
        presets = ((params or {}).get("synthetic") or {}).get("presets") or {}
        if preset not in presets:
            raise ValueError(f"unknown synthetic preset {preset!r}; the params' synthetic.presets: {sorted(presets)}")
        preset = presets[preset]
    if isinstance(preset, SyntheticSpec):
        spec = preset
    else:
        fields = {f.name for f in dataclasses.fields(SyntheticSpec)}
        unknown = sorted(set(preset) - fields)
        if unknown:
            raise ValueError(f"unknown synthetic parameter(s) {unknown}; allowed: {sorted(fields)}")
        spec = SyntheticSpec(**preset)
    for name, message in spec.problems():
        raise ValueError(f"synthetic spec: {name}: {message}")
    return spec


# --------------------------------------------------------------------------------------------
# generation


def _degrees(n: int, total: int, minimum: int, maximum: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """Power-law integer degrees of n nodes (by node id): sum = total, each in [minimum, maximum]."""
    extra, cap = total - n * minimum, maximum - minimum
    weight = np.arange(1, n + 1, dtype=np.float64) ** -exponent  # rank 1 = most active
    share = np.zeros(n)
    capped = 0  # ranks 0..capped-1 hold cap (weights decrease, so the capped ranks are a prefix)
    while True:
        rest = extra - capped * cap
        share[capped:] = rest * weight[capped:] / weight[capped:].sum()
        over = int(np.count_nonzero(share[capped:] > cap))
        if over == 0:
            break
        capped += over
    share[:capped] = cap
    whole = np.minimum(np.floor(share), cap).astype(np.int64)
    missing = extra - int(whole.sum())
    if missing:
        remainder = share - whole
        remainder[whole >= cap] = -1.0  # never above the cap
        whole[np.argsort(-remainder, kind="stable")[:missing]] += 1
    by_rank = minimum + whole
    degrees = np.empty(n, dtype=np.int64)
    degrees[rng.permutation(n)] = by_rank  # node id perm[r] has rank r
    return degrees


def _simple_edges(user_deg: np.ndarray, item_deg: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """Configuration model + degree-preserving swaps: sorted keys user * n_items + item, no repeats.

    Returns the keys and the number of swap rounds.
    """
    n_items = len(item_deg)
    users = np.repeat(np.arange(len(user_deg), dtype=np.int64), user_deg)
    items = rng.permutation(np.repeat(np.arange(n_items, dtype=np.int64), item_deg))
    n = len(users)
    keys = users * n_items + items
    for rounds in range(MAX_SWAP_ROUNDS + 1):
        order = np.argsort(keys, kind="stable")
        ordered = keys[order]
        repeat = np.zeros(n, dtype=bool)
        repeat[1:] = ordered[1:] == ordered[:-1]
        if not repeat.any():
            return ordered, rounds
        if rounds == MAX_SWAP_ROUNDS:
            break
        moved = order[repeat]  # the second and later copies of a repeated pair
        partner = rng.integers(0, n, size=len(moved))
        new_a = users[moved] * n_items + items[partner]
        new_b = users[partner] * n_items + items[moved]

        def exists(k):
            at = np.minimum(np.searchsorted(ordered, k), n - 1)
            return ordered[at] == k

        ok = ~exists(new_a) & ~exists(new_b)
        ok &= (users[partner] != users[moved]) & (items[partner] != items[moved])
        # one swap per edge and per new pair in a round: drop every candidate that shares one
        idx = np.flatnonzero(ok)
        for first, second in ((moved, partner), (new_a, new_b)):
            values = np.concatenate([first[idx], second[idx]])
            _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
            idx = idx[~(counts[inverse] > 1).reshape(2, -1).any(axis=0)]
        a, b = moved[idx], partner[idx]
        items[a], items[b] = items[b], items[a].copy()
        keys[a] = users[a] * n_items + items[a]
        keys[b] = users[b] * n_items + items[b]
    raise RuntimeError(
        f"synthetic: {int(repeat.sum())} repeated (user, item) pairs left after {MAX_SWAP_ROUNDS} swap rounds; "
        "lower item_exponent / user_exponent or n_interactions"
    )


def generate(spec: SyntheticSpec | Mapping[str, Any]) -> pl.DataFrame:
    """The interaction table of ``spec``: columns user (Int32), item (Int32), timestamp (Int64).

    One row per (user, item) pair, sorted by (user, item); users are 0..n_users-1 and items
    0..n_items-1, every one of them present. Deterministic in the spec (seed included).
    """
    users, items, timestamps, _ = _generate_arrays(spec_from(spec))
    return pl.DataFrame(
        {"user": users.astype(np.int32), "item": items.astype(np.int32), "timestamp": timestamps},
        schema=TABLE_SCHEMA,
    )


def _generate_arrays(spec: SyntheticSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    rng = np.random.default_rng(spec.seed)
    user_deg = _degrees(spec.n_users, spec.n_interactions, spec.min_interactions,
                        int(MAX_DEGREE_FRACTION * spec.n_items), spec.user_exponent, rng)
    item_deg = _degrees(spec.n_items, spec.n_interactions, spec.min_interactions,
                        int(MAX_DEGREE_FRACTION * spec.n_users), spec.item_exponent, rng)
    keys, rounds = _simple_edges(user_deg, item_deg, rng)
    users, items = np.divmod(keys, spec.n_items)
    del keys
    span = spec.span_days * DAY_S
    length = (rng.uniform(0.1, 1.0, spec.n_users) * span).astype(np.int64)
    begin = (rng.random(spec.n_users) * (span - length)).astype(np.int64)
    offset = (rng.random(len(users)) * length[users]).astype(np.int64)
    timestamps = spec.start + begin[users] + offset
    return users, items, timestamps, rounds


def synthetic_matrix(
    preset: str | SyntheticSpec | Mapping[str, Any], params: dict | None = None
) -> tuple[sp.csr_matrix, np.ndarray]:
    """The synthetic data straight as a user x item CSR matrix, for benchmarks (no disk round trip).

    ``preset``: a preset name of ``params['synthetic']['presets']``, a mapping of
    :class:`SyntheticSpec` fields, or a spec. Returns ``(matrix, timestamps)``: ``matrix`` is a
    float32 CSR of shape (n_users, n_items) with 1.0 at every interaction (all of them: no
    train/valid/test split), canonical (sorted indices, no duplicates); ``timestamps`` is an
    int64 array aligned with ``matrix.data`` / ``matrix.indices`` (unix seconds). The entries
    are exactly those of :func:`generate` for the same spec.
    """
    spec = spec_from(preset, params)
    users, items, timestamps, _ = _generate_arrays(spec)
    indptr = np.zeros(spec.n_users + 1, dtype=np.int64)
    np.cumsum(np.bincount(users, minlength=spec.n_users), out=indptr[1:])
    index_dtype = np.int32 if spec.n_interactions < 2**31 else np.int64
    matrix = sp.csr_matrix(
        (np.ones(len(items), dtype=np.float32), items.astype(index_dtype), indptr.astype(index_dtype)),
        shape=(spec.n_users, spec.n_items),
    )
    matrix.has_sorted_indices = True
    return matrix, timestamps


def describe(table: pl.DataFrame) -> dict:
    """Summary numbers of a generated table (written beside it by the synthesize stage)."""
    users = table.group_by("user").len()["len"]
    items = table.group_by("item").len()["len"].sort(descending=True)
    top = max(1, len(items) // 100)
    return {
        "n_users": int(table["user"].n_unique()),
        "n_items": int(table["item"].n_unique()),
        "n_interactions": table.height,
        "user_degree_min": int(users.min()),
        "user_degree_max": int(users.max()),
        "item_degree_min": int(items.min()),
        "item_degree_max": int(items.max()),
        "top1pct_items_share": round(float(items[:top].sum()) / table.height, 6),
        "timestamp_min": int(table["timestamp"].min()),
        "timestamp_max": int(table["timestamp"].max()),
    }


# --------------------------------------------------------------------------------------------
# the stage


def write_inter(table: pl.DataFrame, path: Path) -> None:
    """Write the table as a RecBole atomic ``.inter`` file (``user_id  item_id  timestamp``)."""
    from pipeline.io import atomic_path

    with atomic_path(path) as tmp:
        with open(tmp, "w") as fh:
            fh.write(RECBOLE_HEADER + "\n")
        with open(tmp, "ab") as fh:
            table.select("user", "item", "timestamp").write_csv(fh, separator="\t", include_header=False)
