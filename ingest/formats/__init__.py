"""The data formats a config's ``data.format`` can name, one module each, and the registry that lists them.

Why it exists: adding a dataset means adding one module here and one line to :data:`FORMATS`; everything that
asks "which formats are there, which can be loaded into memory, which ship their own split, which keys mean
nothing to them" (the config schema, :func:`ingest.load.load_dataset`) asks this registry.

``files``
    The shop's own files (``items``, ``interactions``, optional ``users``; CSV/TSV, Parquet or JSONL).
``generated``
    A world written by ``twotower generate``; its ``world.json`` time cut-offs are the given split.
``amazon_scientific``, ``amazon_beauty``, ``movielens_100k``
    The shared research datasets (``data.path`` = the folder), see their modules.
``prepared``
    ``twotower prepare`` shards: too big to load, so training streams them (:mod:`ingest.formats.prepared`
    holds the layout; ``training.shard_writer`` writes it, ``training.shard_reader`` streams it).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from ..schema import Dataset
from . import amazon_beauty, amazon_scientific, files, generated, movielens_100k

Loader = Callable[[dict, str, "int | None"], Dataset]   # (data block, on_bad_rows, max_users) -> Dataset


@dataclasses.dataclass(frozen=True)
class Format:
    """One value of ``data.format``."""

    load: Loader | None            # None: streamed by training, never loaded whole
    ships_split: bool              # the data carries its own split (``data.split: {type: given}``)
    unused_keys: tuple[str, ...] = ()   # data keys (beyond the file paths) this format never reads


_FIXED_TIMESTAMPS = ("timestamp_unit",)   # the research datasets' timestamps come in one fixed form

FORMATS: dict[str, Format] = {
    "files": Format(files.load, ships_split=False),
    "generated": Format(generated.load, ships_split=True),
    "amazon_scientific": Format(amazon_scientific.load, ships_split=True, unused_keys=_FIXED_TIMESTAMPS),
    "amazon_beauty": Format(amazon_beauty.load, ships_split=True, unused_keys=_FIXED_TIMESTAMPS),
    "movielens_100k": Format(movielens_100k.load, ships_split=False, unused_keys=_FIXED_TIMESTAMPS),
    "prepared": Format(None, ships_split=True, unused_keys=("on_bad_rows", "timestamp_unit", "max_users")),
}
LOADED = tuple(name for name, fmt in FORMATS.items() if fmt.load is not None)   # what load_dataset reads

__all__ = ["FORMATS", "LOADED", "Format"]
