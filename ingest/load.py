"""`load_dataset(cfg)`: the ``data`` block of a config -> a normalised :class:`~ingest.schema.Dataset`.

Why it exists: whatever the format, loading checks the block's common keys (``format``, ``on_bad_rows``,
``max_users``, the user-id hashing key) the same way before reading anything, hands the reading to the format's
module (:mod:`ingest.formats`), hashes user ids where asked, and holds every format to the Dataset contract.

``max_users`` (optional int) keeps only the first N users (each format says in which order) and counts the rows
it leaves out under the reason "max_users slice". Relative paths are relative to the current working directory.
"""

from __future__ import annotations

import time

import numpy as np

from .formats import FORMATS, LOADED
from .normalize import ON_BAD_ROWS
from .privacy import hash_dataset, key_from_config
from .schema import INTERACTION_COLUMNS, ITEM_COLUMNS, DataError, Dataset, log


def load_dataset(cfg: dict) -> Dataset:
    """Load the dataset that the config's `data` block describes (see :mod:`ingest.formats`)."""
    if not isinstance(cfg, dict):
        raise DataError(f"the data block of the config must be a mapping; got {type(cfg).__name__}")
    fmt = cfg.get("format", "files")
    if fmt not in LOADED:
        why = f"data.format {fmt!r} is " + ("streamed from its shards by training, not loaded whole"
                                             if fmt in FORMATS else "not known")
        raise DataError(f"{why}; valid formats: {', '.join(LOADED)}")
    on_bad_rows = cfg.get("on_bad_rows", "drop")
    if on_bad_rows not in ON_BAD_ROWS:
        raise DataError(f"data.on_bad_rows must be one of {', '.join(ON_BAD_ROWS)}; got {on_bad_rows!r}")
    max_users = cfg.get("max_users")
    if max_users is not None and (isinstance(max_users, bool) or not isinstance(max_users, (int, np.integer))
                                  or max_users < 1):
        raise DataError(f"data.max_users must be a positive integer or null; got {max_users!r}")
    key = key_from_config(cfg)   # before reading anything: a missing salt fails fast
    t0 = time.perf_counter()
    ds = FORMATS[fmt].load(cfg, on_bad_rows, max_users)
    if key is not None:
        ds = hash_dataset(ds, key)
    _check_dataset(ds)
    log.info("loaded %s: %d items, %d users, %d interactions in %.2fs (dropped %d row(s))", ds.name,
             len(ds.items), ds.interactions["user_id"].nunique(), len(ds.interactions),
             time.perf_counter() - t0, ds.report.total)
    return ds


def _check_dataset(ds: Dataset) -> None:
    """The Dataset contract (schema.py); a failure here is a loader bug, so it says so."""
    inter, items = ds.interactions, ds.items
    assert list(inter.columns) == list(INTERACTION_COLUMNS), f"{ds.name}: interaction columns {list(inter.columns)}"
    assert list(items.columns[:len(ITEM_COLUMNS)]) == list(ITEM_COLUMNS), f"{ds.name}: item columns"
    assert inter["timestamp"].dtype == np.int64 and inter["weight"].dtype == np.float64
    assert items["item_id"].is_unique, f"{ds.name}: item ids not unique"
    assert (items["title"].str.len() > 0).all(), f"{ds.name}: empty title"
    assert inter["item_id"].isin(set(items["item_id"])).all(), f"{ds.name}: interaction with an unknown item"
    if ds.given_split is not None:
        assert ds.given_split.index.equals(inter.index), f"{ds.name}: given_split not aligned"
    if inter.empty:
        raise DataError(f"{ds.name}: no interactions left after filtering ({ds.report.as_dict()})")

__all__ = ["load_dataset"]
