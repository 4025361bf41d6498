"""The in-memory shape every loader produces, and the record of what was dropped on the way.

Every loader (a shop's own CSV/Parquet/JSONL files, the shared research datasets, the generated world) returns
a :class:`Dataset` with the same normalised columns, so that the towers and the training code never need to
know where the data came from.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter

import pandas as pd

log = logging.getLogger("twotower.data")

# Normalised columns. Loaders fill missing optional columns with "" (text) or NaN (price).
ITEM_TEXT_COLUMNS = ("title", "description", "category", "brand")
ITEM_COLUMNS = ("item_id", *ITEM_TEXT_COLUMNS, "price")
INTERACTION_COLUMNS = ("user_id", "item_id", "timestamp", "event", "weight")
USER_COLUMNS = ("user_id", "profile_text")
# The columns a shop's own files (data.format files) must have.
REQUIRED_COLUMNS = {
    "items": ("item_id", "title"),
    "interactions": ("user_id", "item_id", "timestamp"),
    "users": ("user_id",),
}


class DataError(ValueError):
    """Bad input that stops loading. The message names the file, row and field; the CLI prints it, no traceback."""


@dataclasses.dataclass
class DropReport:
    """Counts every row a loader or split dropped, with its reason. Nothing is dropped silently."""

    counts: Counter = dataclasses.field(default_factory=Counter)
    examples: dict = dataclasses.field(default_factory=dict)
    # Rows kept but repaired or worth a look (unparseable price -> NaN, placeholder title, ...): not drops.
    warnings: Counter = dataclasses.field(default_factory=Counter)

    def drop(self, source: str, reason: str, n: int, example: str | None = None) -> None:
        if n <= 0:
            return
        self.counts[(source, reason)] += int(n)
        if example is not None:
            self.examples.setdefault((source, reason), example)
        log.warning("dropped %d row(s) from %s: %s%s", n, source, reason,
                    f" (e.g. {example})" if example else "")

    def warn(self, source: str, reason: str, n: int, example: str | None = None) -> None:
        if n <= 0:
            return
        self.warnings[(source, reason)] += int(n)
        if example is not None:
            self.examples.setdefault((source, reason), example)
        log.warning("%d row(s) in %s: %s%s", n, source, reason, f" (e.g. {example})" if example else "")

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def as_dict(self) -> dict:
        return {f"{source}: {reason}": n for (source, reason), n in sorted(self.counts.items())}


@dataclasses.dataclass
class Dataset:
    """A shop's catalogue, its users and their behaviour, in normalised columns.

    items: one row per item, columns ITEM_COLUMNS (+ any extra text columns), item_id unique str.
    interactions: columns INTERACTION_COLUMNS; user_id/item_id str, timestamp int64 (unix seconds, or an
        ordinal where the source has only an order), event str ("" if unknown), weight float (1.0 default).
        Every item_id is in `items`. Sorted by (user_id, timestamp) stably (source order breaks ties).
    users: columns USER_COLUMNS (+ categorical columns as str) or None when the source has no user file.
    given_split: None, or a Series aligned with `interactions` holding "train"/"valid"/"test" where the source
        ships its own split (Amazon Scientific's RecBole files).
    user_id_hash: None, or the fingerprint of the key every user id was hashed with (``data.hash_user_ids``).
    """

    items: pd.DataFrame
    interactions: pd.DataFrame
    users: pd.DataFrame | None = None
    given_split: pd.Series | None = None
    report: DropReport = dataclasses.field(default_factory=DropReport)
    name: str = "dataset"
    user_id_hash: str | None = None   # fingerprint of the salted-hash key when user ids are hashed (ingest.privacy)
