"""Data stages: download (sources), synthetic (generated sources), readers (raw formats), prepare
(canonical table), dataset (matrices).

The canonical interaction table, ``data/prepared/<split>/interactions.parquet``, one row per
interaction, sorted by (user, order):

======== ======= =============================================================
column   type    meaning
======== ======= =============================================================
user     Int32   user index, contiguous 0..n_users-1
item     Int32   item index, contiguous 0..n_items-1
split    String  "train", "valid" or "test"
order    Int32   0-based position in the user's time order over all splits
timestamp Int64  unix seconds, null when the source has none
rating   Float32 the raw rating, null when the source has none
======== ======= =============================================================

A (user, item) pair has one row, except in the ``authors`` setting of TV-Diff's given splits,
whose validation part is the test part itself: each test row is there twice, as valid and as test.

Beside it, ``stats.json`` holds n_users, n_items, per-split counts, what each filter removed and
the valid/test users and items never seen in train (DVC shows it as metrics; see
:mod:`pipeline.stages.prepare`).
"""

COLUMNS = ("user", "item", "split", "order", "timestamp", "rating")
SPLITS = ("train", "valid", "test")
