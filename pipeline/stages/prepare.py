"""Prepare stage: raw source files -> the canonical interaction table and its statistics.

Writes ``<out_dir>/interactions.parquet`` (the canonical table of :mod:`pipeline.data`) and
``<out_dir>/stats.json``. Both are byte-reproducible: every sort has a total order or is stable,
and nothing depends on the clock, the machine or a random generator.

DiffRec's released splits (format ``diffrec``)
    Imported as they are, without any filtering: user and item ids as released,
    ``n_users = max user + 1`` and ``n_items = max item + 1`` over all three splits, ``order`` =
    position within the user over train, valid, test (the release's time order). The settings
    clean, noisy and temporal all use the given files; temporal is the clean release, whose
    ``order`` column carries the time order. Timestamps and ratings are null.

Raw ratings (formats ``movielens-dat``, ``recbole``, ``yelp-json``, ``amazon-csv``,
    ``amazon-json``; see :mod:`pipeline.data.readers`): our own, documented protocol
    (``protocol`` block of ``params.yaml``), applied in this order. The source must have
    timestamps (the split is chronological); one without ratings counts every interaction as
    a positive (and its noisy setting adds nothing).

    1. Duplicates: if a user rated an item more than once, only the most recent rating is kept
       (latest timestamp; among equal timestamps the one later in the file).
    2. Threshold: interactions with ``rating >= rating_threshold`` are positives; the others
       are dropped.
    3. k-core: users and items with fewer than ``k_core`` positives are removed, repeatedly,
       until every remaining user and item has at least ``k_core``.
    4. Ids: the surviving raw user (item) ids are numbered 0..n-1 in their natural order: by
       integer value when every raw id is a canonical decimal integer, else by string (byte)
       order. This is deterministic and independent of the file's row order. Yelp's 22-character
       ids and Amazon's reviewer ids / ASINs (``0439023483``, ``B00005N7P0``: leading zeros and
       letters) are therefore numbered in sorted byte order of the id strings.
    5. Split, per user, chronologically: the user's n positives are sorted by (timestamp, raw
       item id; the item index has the same order) and cut with ratios (r0, r1, r2):

       - rounding ``diffrec``: n_train = int(r0 n) + 1, n_valid = ceil(r1 n) - 1, computed in
         plain double-precision floating point exactly as DiffRec's preprocessing did. This is
         the rule behind DiffRec's released ML-1M files, true for all 5,949 users *including*
         its floating-point artefacts: 0.7 * 90 = 62.99999999999999, so a user with 90
         interactions has 63 training rows, not 64 (51 users of the release have such n).
       - rounding ``floor``: n_train = floor(r0 n), n_valid = floor(r1 n), with the products
         rounded to 9 decimals first, so 0.7 * 90 counts as 63 (epsilon-safe).
       - n_test = the rest.

       Guard for very small n: n_train is clamped to [1, n] and n_valid to [0, n - n_train], so
       no count is negative and every user keeps at least one training row (its valid or test
       part may then be empty; with ``k_core >= 10`` and ratios 0.7/0.2/0.1 this never happens).
       ``stats.json`` reports the number of users the clamp changed (``split_clamped_users``).

    Settings:

    - ``clean``: the table above.
    - ``temporal``: identical rows to clean (same ids, same split); its ``order`` column is
      the per-user time order that T-DiffRec's weighting uses.
    - ``noisy``: DiffRec's noisy files cannot be regenerated from raw data, so this is our own
      rule. Start from the clean split. Noise candidates are the (deduplicated) interactions
      with ``rating < rating_threshold`` whose user and item both survive in clean. A candidate
      goes to train if its timestamp <= the user's last clean-train timestamp, else to valid
      if its timestamp <= the user's last clean-valid timestamp, else it is dropped. The test
      split is never touched: it equals clean's. If ``noisy_max_fraction`` f < 1, a
      deterministic, evenly spread subset of the eligible candidates is kept: sorted by
      (user, timestamp, item), candidate i (0-based) is kept iff floor((i+1) f) > floor(i f),
      which keeps floor(N f) of N. ``order`` is then recomputed per user over all rows sorted by
      (timestamp, item). Ids and n_users/n_items are those of clean.

TV-Diff's given train/test split (formats ``tvdiff-count``, ``tvdiff-time``; see
    :mod:`pipeline.data.readers`): the authors' own random 80/20 split, read as it is from
    ``train.txt`` and ``test.txt``; it is given, never regenerated. A (user, item) pair that
    occurs twice (within a file or in both) is an error naming its lines. Two settings:

    - ``carved`` (ours): every given test row stays in test, untouched (also rows whose user
      or item has no train row: ``unseen_in_train_handling`` ``"kept"``, as everywhere). A
      validation part is carved from the given train part, per user: a user with n given train
      rows gives ``carve_size(n) = 0`` rows if n < ``protocol.valid_min_train``, else
      max(1, floor(``valid_fraction`` * n)) (the product rounded to 9 decimals first, so
      0.7 * 10 counts as 7). They are the user's carve_size(n) train rows with the smallest
      key, key = the first 8 bytes, read as a big-endian unsigned integer, of
      SHA-256(``"<valid_seed>\\t<raw user id>\\t<raw item id>"`` in UTF-8), ties (never seen)
      broken by the earlier line. The key depends only on the seed and the pair, not on the
      row order, a library's random generator or the machine, so the carve is
      byte-reproducible; another ``valid_seed`` carves other rows of the same sizes. The rest
      stays in train; selection happens on this validation part.
    - ``authors`` (the authors' protocol): test rows whose user or whose item has no row in
      the given train part are dropped (counted: ``test_dropped_rows``, and of them
      ``test_dropped_rows_user_not_in_train`` / ``test_dropped_rows_item_not_in_train``, a row
      counting in both when both are missing; ``test_dropped_users_not_in_train`` /
      ``test_dropped_items_not_in_train`` distinct ids). Train is the given train part, and the
      **validation part is the kept test part itself**: every kept test row is written twice,
      once with split ``valid`` and once with ``test``. The authors pick the best epoch on
      test; a trainer that selects on validation does exactly that here, and the validation
      metrics of the selected epoch are the numbers of their protocol (label them
      "test-selected (authors' protocol)"). ``n_interactions`` (and ``density``) count the
      table's rows, the test rows twice. The evaluator masks, for test, train and the validation
      items that are not test positives, so the run's test metrics equal its validation ones.

    Ids (both settings): the raw user (item) ids of the rows kept, numbered 0..n-1 in their
    natural order, as in step 4 of the raw protocol (by integer value when every raw id is a
    canonical decimal integer, as in TV-Diff's files, else by byte order). So ``carved`` also
    numbers the users and items found only in test; ``authors`` numbers exactly the train
    ones. ``rating`` is the play count (``tvdiff-count``) and ``timestamp`` null, or
    ``timestamp`` the unix time (``tvdiff-time``) and ``rating`` null. ``order``: the user's
    rows sorted by (timestamp, part: train < valid < test, line in its file), i.e. the time
    order over all parts where there are times (ties, frequent since amazon-beauty's times are
    whole days: train first), else train rows, then valid, then test, each in file order.

    Statistics added: ``given_train``, ``given_train_users``, ``given_train_items``,
    ``given_test``, ``given_test_users``, ``given_test_items`` (the files as read), for
    ``carved`` ``valid_fraction``, ``valid_min_train``, ``valid_seed``, ``valid_carved_users``
    (users with valid rows) and ``valid_skipped_users`` (users with fewer than
    ``valid_min_train`` given train rows), for ``authors`` the ``test_dropped_*`` counts, and
    for both ``selected_on`` (``"valid"`` or ``"test"``), ``selection`` (the label for tables:
    ``"validation carved from the given train part"`` or ``"test-selected (authors'
    protocol)"``) and ``valid_is_test``. ``unseen_in_train_handling`` is ``"kept"`` for
    ``carved`` and ``"dropped from test (authors' protocol)"`` for ``authors``.

Statistics (``stats.json``, every format): dataset, setting, format, n_users, n_items,
n_interactions, n_train/n_valid/n_test, train_users/valid_users/test_users (users with at least
one row in the split), valid_items_unseen_in_train / test_items_unseen_in_train (rows whose item
never occurs in train) and density = n_interactions / (n_users n_items). Raw formats add what
each filter removed (``raw_*``, ``duplicates_removed``, ``threshold_removed_*``,
``kcore_removed_*``, ``kcore_rounds``, ``split_clamped_users``); noisy adds ``noise_candidates``,
``noise_added_train``, ``noise_added_valid``, ``noise_dropped_after_valid`` and
``noise_dropped_by_fraction``.

Every format ends with the users and items of valid and test that never occur in train (after
k-core, which removes users and items as a whole, this can still happen when a user's or an
item's rows all fall into valid/test): ``valid_users_unseen_in_train``,
``test_users_unseen_in_train`` (distinct users with rows in the split and none in train),
``valid_items_unseen_in_train_distinct``, ``test_items_unseen_in_train_distinct`` (distinct
items; ``*_items_unseen_in_train`` above counts their rows) and ``unseen_in_train_handling``:
``"kept"`` — such rows are neither dropped nor moved; they stay in valid/test, every model scores
the whole item catalogue (an item never seen in train can be ranked, it just had no positive to
learn from), and a user without train rows is scored from an empty input row and counts in
the means of the splits where it has items. With ``k_core >= 1`` and the split's small-n guard
every user has a train row, so the user counts are 0 for raw formats; DiffRec's released files
are counted as they are.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import polars as pl

from pipeline.config import (
    GIVEN_SPLIT_FORMATS,
    GIVEN_SPLIT_SETTINGS,
    ProtocolConfig,
    SplitConfig,
    protocol_config,
    split_config,
)
from pipeline.data import COLUMNS
from pipeline.data.readers import READERS
from pipeline.io import atomic_path, write_json

CANONICAL_SCHEMA = {
    "user": pl.Int32,
    "item": pl.Int32,
    "split": pl.String,
    "order": pl.Int32,
    "timestamp": pl.Int64,
    "rating": pl.Float32,
}
ROUND_DIGITS = 9  # epsilon-safe floor: r * n is rounded to this many decimals first


# --------------------------------------------------------------------------------------------
# raw ratings -> clean / noisy / temporal


def _natural_key(ids: pl.Series) -> pl.Series:
    """Sort key for raw ids: Int64 if every id is a canonical decimal integer, else the string."""
    as_int = ids.cast(pl.Int64, strict=False)
    if as_int.null_count() == 0 and (as_int.cast(pl.String) == ids).all():
        return as_int
    return ids


def _id_map(keys: pl.Series, name: str) -> pl.DataFrame:
    """Map the distinct keys, in sorted order, to 0..n-1 (column ``name``, Int32)."""
    distinct = keys.unique().sort()
    return pl.DataFrame({keys.name: distinct}).with_columns(pl.int_range(pl.len(), dtype=pl.Int32).alias(name))


def _floor(x: pl.Expr) -> pl.Expr:
    return x.round(ROUND_DIGITS).floor().cast(pl.Int64)


def _rule_sizes(n: int, ratios: tuple[float, float, float], rounding: str) -> tuple[int, int]:
    """(n_train, n_valid) of the rounding rule, before the small-n guard."""
    if rounding == "diffrec":
        # plain IEEE-double arithmetic, as DiffRec's own preprocessing: int(0.7 * 90) = 62
        return int(ratios[0] * n) + 1, math.ceil(ratios[1] * n) - 1
    if rounding == "floor":
        r0, r1 = round(ratios[0] * n, ROUND_DIGITS), round(ratios[1] * n, ROUND_DIGITS)
        return math.floor(r0), math.floor(r1)
    raise ValueError(f"unknown protocol.rounding {rounding!r}; allowed: ['diffrec', 'floor']")


def split_sizes(n: int, ratios: tuple[float, float, float], rounding: str) -> tuple[int, int, int]:
    """(n_train, n_valid, n_test) for a user with n interactions (module docstring, step 5).

    n_train is clamped to [1, n] and n_valid to [0, n - n_train]; n_test is the rest.
    """
    train, valid = _rule_sizes(n, ratios, rounding)
    train = min(max(train, 1), n)
    valid = min(max(valid, 0), n - train)
    return train, valid, n - train - valid


def _chronological_split(rows: pl.DataFrame, protocol: ProtocolConfig) -> tuple[pl.DataFrame, int]:
    """Sort each user's rows by (timestamp, item), number them and assign train/valid/test.

    Returns the rows sorted by (user, order) and the number of users whose counts were clamped.
    """
    rows = rows.sort("user", "timestamp", "item", maintain_order=True).with_columns(
        order=pl.int_range(pl.len(), dtype=pl.Int32).over("user"), _n=pl.len().over("user").cast(pl.Int64)
    )
    sizes = {n: split_sizes(n, protocol.ratios, protocol.rounding) for n in rows["_n"].unique().to_list()}
    clamped_n = [n for n, (t, v, _) in sizes.items() if (t, v) != _rule_sizes(n, protocol.ratios, protocol.rounding)]
    clamped = rows.filter(pl.col("_n").is_in(clamped_n))["user"].n_unique()
    train = pl.col("_n").replace_strict({n: s[0] for n, s in sizes.items()}, return_dtype=pl.Int64)
    valid = pl.col("_n").replace_strict({n: s[1] for n, s in sizes.items()}, return_dtype=pl.Int64)
    rows = rows.with_columns(
        split=pl.when(pl.col("order") < train)
        .then(pl.lit("train"))
        .when(pl.col("order") < train + valid)
        .then(pl.lit("valid"))
        .otherwise(pl.lit("test"))
    )
    return rows.drop("_n"), clamped


def _kcore(rows: pl.DataFrame, k: int) -> tuple[pl.DataFrame, int]:
    """Iteratively drop users and items with fewer than k rows.

    Returns the stable rows and the number of rounds that removed something.
    """
    rounds = 0
    while True:
        kept = rows.filter((pl.len().over("user_key") >= k) & (pl.len().over("item_key") >= k))
        if kept.height == rows.height:
            return kept, rounds
        rows, rounds = kept, rounds + 1


def _add_noise(
    clean: pl.DataFrame, negatives: pl.DataFrame, fraction: float
) -> tuple[pl.DataFrame, dict[str, int]]:
    """The noisy rule of the module docstring: low-rated interactions added to train / valid."""
    bounds = clean.group_by("user").agg(
        _last_train=pl.col("timestamp").filter(pl.col("split") == "train").max(),
        _last_valid=pl.col("timestamp").filter(pl.col("split") == "valid").max(),
    )
    candidates = negatives.join(bounds, on="user", how="inner").with_columns(
        split=pl.when(pl.col("timestamp") <= pl.col("_last_train"))
        .then(pl.lit("train"))
        .when(pl.col("timestamp") <= pl.col("_last_valid"))
        .then(pl.lit("valid"))
        .otherwise(pl.lit(None, dtype=pl.String))
    )
    eligible = candidates.filter(pl.col("split").is_not_null()).sort("user", "timestamp", "item", maintain_order=True)
    if fraction < 1:
        i = pl.int_range(pl.len(), dtype=pl.Int64)
        eligible = eligible.filter(_floor((i + 1) * fraction) > _floor(i * fraction))
    counts = {
        "noise_candidates": candidates.height,
        "noise_added_train": eligible.filter(pl.col("split") == "train").height,
        "noise_added_valid": eligible.filter(pl.col("split") == "valid").height,
        "noise_dropped_after_valid": candidates["split"].null_count(),
        "noise_dropped_by_fraction": candidates.height - candidates["split"].null_count() - eligible.height,
    }
    rows = pl.concat([clean.drop("order"), eligible.select(clean.drop("order").columns)], how="vertical")
    rows = rows.sort("user", "timestamp", "item", maintain_order=True).with_columns(
        order=pl.int_range(pl.len(), dtype=pl.Int32).over("user")
    )
    return rows, counts


def _prepare_raw(raw: pl.DataFrame, setting: str, protocol: ProtocolConfig, source: str) -> tuple[pl.DataFrame, dict]:
    """Raw ratings -> canonical rows for ``setting`` and the filter statistics."""
    if raw["timestamp"].null_count():
        raise ValueError(f"{source}: the raw protocol splits by time, but the source has no timestamps")
    stats: dict[str, int] = {
        "raw_interactions": raw.height,
        "raw_users": raw["raw_user"].n_unique(),
        "raw_items": raw["raw_item"].n_unique(),
    }
    rows = raw.with_columns(
        user_key=_natural_key(raw["raw_user"]),
        item_key=_natural_key(raw["raw_item"]),
        _pos=pl.int_range(pl.len(), dtype=pl.Int64),
    )
    # 1. duplicates: keep the most recent rating (latest timestamp, then later in the file)
    rows = rows.sort("user_key", "item_key", "timestamp", "_pos", maintain_order=True).unique(
        subset=["user_key", "item_key"], keep="last", maintain_order=True
    )
    stats["duplicates_removed"] = raw.height - rows.height

    # 2. threshold
    if rows["rating"].null_count() == rows.height:
        positive = pl.lit(True)
    else:
        positive = pl.col("rating") >= protocol.rating_threshold
    rows = rows.with_columns(_positive=positive.fill_null(False))
    positives = rows.filter(pl.col("_positive"))
    stats["threshold_removed_interactions"] = rows.height - positives.height
    stats["threshold_removed_users"] = rows["user_key"].n_unique() - positives["user_key"].n_unique()
    stats["threshold_removed_items"] = rows["item_key"].n_unique() - positives["item_key"].n_unique()

    # 3. k-core
    core, rounds = _kcore(positives, protocol.k_core)
    if core.height == 0:
        raise ValueError(f"{source}: no interaction survives the threshold and {protocol.k_core}-core filters")
    stats["kcore_removed_interactions"] = positives.height - core.height
    stats["kcore_removed_users"] = positives["user_key"].n_unique() - core["user_key"].n_unique()
    stats["kcore_removed_items"] = positives["item_key"].n_unique() - core["item_key"].n_unique()
    stats["kcore_rounds"] = rounds

    # 4. ids in natural raw-id order
    users = _id_map(core["user_key"], "user")
    items = _id_map(core["item_key"], "item")

    def with_ids(frame: pl.DataFrame) -> pl.DataFrame:
        return frame.join(users, on="user_key", how="inner").join(items, on="item_key", how="inner")

    # 5. chronological split
    clean, clamped = _chronological_split(with_ids(core), protocol)
    stats["split_clamped_users"] = clamped
    if setting == "noisy":
        negatives = with_ids(rows.filter(~pl.col("_positive")))
        result, noise = _add_noise(clean, negatives, protocol.noisy_max_fraction)
        stats.update(noise)
    else:  # clean and temporal: the same rows
        result = clean
    stats["_n_users"], stats["_n_items"] = users.height, items.height
    return result, stats


# --------------------------------------------------------------------------------------------
# TV-Diff's given train/test split -> carved / authors

PART_RANK = {"train": 0, "valid": 1, "test": 2}
SELECTION = {
    "carved": ("valid", "validation carved from the given train part"),
    "authors": ("test", "test-selected (authors' protocol)"),
}


def carve_key(seed: int, raw_user: str, raw_item: str) -> int:
    """The carve's pseudo-random key of a train row: the first 8 bytes, big-endian, of
    SHA-256(``"<seed>\\t<raw user>\\t<raw item>"`` in UTF-8), an integer in [0, 2**64)."""
    digest = hashlib.sha256(f"{seed}\t{raw_user}\t{raw_item}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big")


def carve_size(n: int, fraction: float, min_train: int) -> int:
    """Validation rows carved from a user's n given train rows: 0 if n < min_train, else
    max(1, floor(fraction n)), the product rounded to 9 decimals first (epsilon-safe)."""
    if n < min_train:
        return 0
    return max(1, math.floor(round(fraction * n, ROUND_DIGITS)))


def _carve(train: pl.DataFrame, protocol: ProtocolConfig) -> tuple[pl.DataFrame, dict]:
    """Mark each user's carve_size rows with the smallest carve_key (ties: earlier line) as valid."""
    seed = protocol.valid_seed
    keys = [carve_key(seed, u, i) for u, i in zip(train["raw_user"].to_list(), train["raw_item"].to_list())]
    rows = train.with_columns(
        _key=pl.Series(keys, dtype=pl.UInt64), _n=pl.len().over("user").cast(pl.Int64)
    ).sort("user", "_key", "line", maintain_order=True)
    sizes = {n: carve_size(n, protocol.valid_fraction, protocol.valid_min_train) for n in rows["_n"].unique().to_list()}
    n_valid = pl.col("_n").replace_strict(sizes, return_dtype=pl.Int64)
    rank = pl.int_range(pl.len(), dtype=pl.Int64).over("user")
    rows = rows.with_columns(split=pl.when(rank < n_valid).then(pl.lit("valid")).otherwise(pl.lit("train")))
    per_user = rows.group_by("user").agg(_n=pl.col("_n").first(), _v=(pl.col("split") == "valid").sum())
    stats = {
        "valid_fraction": protocol.valid_fraction,
        "valid_min_train": protocol.valid_min_train,
        "valid_seed": seed,
        "valid_carved_users": per_user.filter(pl.col("_v") > 0).height,
        "valid_skipped_users": per_user.filter(pl.col("_n") < protocol.valid_min_train).height,
    }
    return rows.drop("_key", "_n"), stats


def _prepare_given(raw: pl.DataFrame, setting: str, protocol: ProtocolConfig, source: str) -> tuple[pl.DataFrame, dict]:
    """TV-Diff's given train/test rows -> canonical rows for ``setting`` (carved or authors)."""
    pairs = raw.with_columns(_count=pl.len().over("raw_user", "raw_item")).filter(pl.col("_count") > 1)
    if pairs.height:
        first = pairs.row(0, named=True)
        where = pairs.filter((pl.col("raw_user") == first["raw_user"]) & (pl.col("raw_item") == first["raw_item"]))
        lines = ", ".join(f"{part}.txt line {line}" for part, line in where.select("split", "line").rows())
        raise ValueError(f"{source}: user {first['raw_user']!r} and item {first['raw_item']!r} occur more than once "
                         f"in the given split ({lines}); a given split holds each pair once")
    train, test = raw.filter(pl.col("split") == "train"), raw.filter(pl.col("split") == "test")
    stats: dict = {
        "given_train": train.height,
        "given_train_users": train["raw_user"].n_unique(),
        "given_train_items": train["raw_item"].n_unique(),
        "given_test": test.height,
        "given_test_users": test["raw_user"].n_unique(),
        "given_test_items": test["raw_item"].n_unique(),
    }
    if train.height == 0:
        raise ValueError(f"{source}: the given train part is empty")
    if setting == "authors":
        user_known = pl.col("raw_user").is_in(train["raw_user"].unique().implode())
        item_known = pl.col("raw_item").is_in(train["raw_item"].unique().implode())
        dropped = test.filter(~(user_known & item_known))
        stats.update({
            "test_dropped_rows": dropped.height,
            "test_dropped_rows_user_not_in_train": dropped.filter(~user_known).height,
            "test_dropped_rows_item_not_in_train": dropped.filter(~item_known).height,
            "test_dropped_users_not_in_train": dropped.filter(~user_known)["raw_user"].n_unique(),
            "test_dropped_items_not_in_train": dropped.filter(~item_known)["raw_item"].n_unique(),
        })
        test = test.filter(user_known & item_known)
    rows = pl.concat([train, test], how="vertical")

    # ids: natural raw-id order over the rows kept (as step 4 of the raw protocol)
    rows = rows.with_columns(user_key=_natural_key(rows["raw_user"]), item_key=_natural_key(rows["raw_item"]))
    users, items = _id_map(rows["user_key"], "user"), _id_map(rows["item_key"], "item")
    rows = rows.join(users, on="user_key", how="left").join(items, on="item_key", how="left")

    train, test = rows.filter(pl.col("split") == "train"), rows.filter(pl.col("split") == "test")
    if setting == "carved":
        train, carve = _carve(train, protocol)
        stats.update(carve)
        parts = [train, test]
    else:  # authors: the validation part is the kept test part itself
        parts = [train, test.with_columns(split=pl.lit("valid")), test]
    table = pl.concat(parts, how="vertical").with_columns(
        _part=pl.col("split").replace_strict(PART_RANK, return_dtype=pl.Int8)
    )
    table = table.sort("user", "timestamp", "_part", "line", maintain_order=True).with_columns(
        order=pl.int_range(pl.len(), dtype=pl.Int32).over("user")
    )
    selected_on, label = SELECTION[setting]
    stats.update({"selected_on": selected_on, "selection": label, "valid_is_test": setting == "authors"})
    stats["_n_users"], stats["_n_items"] = users.height, items.height
    return table, stats


# --------------------------------------------------------------------------------------------
# statistics and the stage


def split_stats(table: pl.DataFrame, n_users: int, n_items: int) -> dict:
    """Counts that describe a canonical table (see the module docstring)."""
    stats = {"n_users": n_users, "n_items": n_items, "n_interactions": table.height}
    train_items = table.filter(pl.col("split") == "train")["item"].unique().implode()
    for split in ("train", "valid", "test"):
        part = table.filter(pl.col("split") == split)
        stats[f"n_{split}"] = part.height
        stats[f"{split}_users"] = part["user"].n_unique()
        if split != "train":
            stats[f"{split}_items_unseen_in_train"] = part.filter(~pl.col("item").is_in(train_items)).height
    stats["density"] = table.height / (n_users * n_items) if n_users and n_items else 0.0
    return stats


def unseen_stats(table: pl.DataFrame, handling: str | None = None) -> dict:
    """Valid/test users and distinct items that never occur in train, and how they are handled.

    The keys are appended at the end of ``stats.json`` (see the module docstring).
    """
    train = table.filter(pl.col("split") == "train")
    train_users, train_items = train["user"].unique().implode(), train["item"].unique().implode()
    stats: dict = {}
    for split in ("valid", "test"):
        part = table.filter(pl.col("split") == split)
        stats[f"{split}_users_unseen_in_train"] = part.filter(~pl.col("user").is_in(train_users))["user"].n_unique()
    for split in ("valid", "test"):
        part = table.filter(pl.col("split") == split)
        stats[f"{split}_items_unseen_in_train_distinct"] = part.filter(~pl.col("item").is_in(train_items))["item"].n_unique()
    stats["unseen_in_train_handling"] = handling or UNSEEN_HANDLING
    return stats


UNSEEN_HANDLING = "kept"  # rows of unseen users/items stay in valid/test and are evaluated as usual
# the authors' protocol drops test rows whose user or item is not in train (counted in stats.json)
DROPPED_HANDLING = "dropped from test (authors' protocol)"


def prepare(split: SplitConfig, protocol: ProtocolConfig, raw_dir: Path, out_dir: Path) -> dict:
    """Build ``out_dir/interactions.parquet`` and ``out_dir/stats.json``; returns the stats."""
    if split.format not in READERS:
        raise ValueError(f"unknown format {split.format!r}; allowed: {sorted(READERS)}")
    given = split.format in GIVEN_SPLIT_FORMATS
    settings = GIVEN_SPLIT_SETTINGS if given else ("clean", "noisy", "temporal")
    if split.setting not in settings:
        raise ValueError(f"unknown setting {split.setting!r} for format {split.format!r}; allowed: {list(settings)}")
    raw = READERS[split.format](Path(raw_dir))
    extra: dict = {}
    handling = None
    if split.format == "diffrec":
        table = raw
        n_users, n_items = int(table["user"].max()) + 1, int(table["item"].max()) + 1
    elif given:
        table, extra = _prepare_given(raw, split.setting, protocol, f"{split.name} ({raw_dir})")
        n_users, n_items = extra.pop("_n_users"), extra.pop("_n_items")
        handling = DROPPED_HANDLING if split.setting == "authors" else None
    else:
        table, extra = _prepare_raw(raw, split.setting, protocol, f"{split.name} ({raw_dir})")
        n_users, n_items = extra.pop("_n_users"), extra.pop("_n_items")

    table = table.select([pl.col(c).cast(t) for c, t in CANONICAL_SCHEMA.items()]).sort(
        "user", "order", maintain_order=True
    )
    assert tuple(table.columns) == COLUMNS
    stats = {"dataset": split.dataset, "setting": split.setting, "format": split.format}
    stats.update(split_stats(table, n_users, n_items))
    stats.update(extra)
    stats.update(unseen_stats(table, handling))

    out_dir = Path(out_dir)
    with atomic_path(out_dir / "interactions.parquet") as tmp:
        table.write_parquet(tmp, use_pyarrow=True)
    write_json(out_dir / "stats.json", stats)
    return stats


def main(params: dict, split_name: str, raw_dir: str, out_dir: str) -> dict:
    """``python -m pipeline prepare``: prepare one split named in params.yaml."""
    split = split_config(params, split_name)
    stats = prepare(split, protocol_config(params), Path(raw_dir), Path(out_dir))
    print(
        f"prepare {split_name}: {stats['n_users']} users, {stats['n_items']} items, "
        f"train/valid/test = {stats['n_train']}/{stats['n_valid']}/{stats['n_test']} -> {out_dir}"
    )
    return stats
