"""Format ``generated``: a world written by ``twotower generate`` (``data.path`` = its directory).

Why it exists: the generated world is the shop's files plus ``world.json``, whose time cut-offs are the world's
own split. This module is the one place that knows those file names and reads ``world.json``: the generator
writes under these names, the in-memory loader and ``twotower prepare`` both read through :func:`read_world`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from ..schema import DataError, Dataset
from ..split import assign_split
from . import files as shop_files
from .common import dataset_dir

FILES = {"items": "items.csv", "interactions": "interactions.csv", "users": "users.csv"}
WORLD = "world.json"
# The search queries' ground truth (ingest/generate.py writes it, training/search_queries.py reads it): not part
# of the shop's data, so not in FILES.
SEARCH_QUERIES = "search_queries.csv"
SEARCH_QUERY_COLUMNS = ("user_id", "query", "category", "noun", "style", "relevant_item_ids")


def read_world(directory: Path) -> tuple[dict[str, Path], dict]:
    """A generated world's files (``items``, ``interactions``, ``users`` -> path) and its split (the temporal
    cut-offs in ``world.json``, as a ``data.split`` block)."""
    world_file = Path(directory) / WORLD
    if not world_file.is_file():
        raise DataError(f"{world_file}: not found; data.path must be a directory written by twotower generate")
    try:
        world = json.loads(world_file.read_text(encoding="utf-8"))
        split = {"type": "temporal", "valid_start": world["valid_start"], "test_start": world["test_start"]}
    except (ValueError, KeyError, TypeError) as err:
        raise DataError(f"{world_file}: not a world description ({err}); regenerate it with twotower "
                        f"generate") from None
    return {key: Path(directory) / name for key, name in FILES.items()}, split


def load(cfg: dict, on_bad_rows: str, max_users: int | None) -> Dataset:
    """A generated world's files, with its own time cut-offs from world.json as the given split."""
    paths, split = read_world(dataset_dir(cfg, "generated"))
    ds = shop_files.load({**cfg, **{key: str(path) for key, path in paths.items()}, "name": "generated"},
                         on_bad_rows, max_users)
    ds.given_split = assign_split(ds, split, ds.report)
    return ds


def read_search_queries(directory: Path) -> pd.DataFrame | None:
    """A generated world's search-query ground truth (one row per query; ``relevant`` holds the list of relevant
    item ids), or None for a world written before the generator wrote one."""
    path = Path(directory) / SEARCH_QUERIES
    if not path.is_file():
        return None
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (ValueError, pd.errors.ParserError) as err:
        raise DataError(f"{path}: not a CSV file ({err}); regenerate the world with twotower generate") from None
    missing = [c for c in SEARCH_QUERY_COLUMNS if c not in table.columns]
    if missing:
        raise DataError(f"{path}: lacks column(s) {', '.join(missing)} (has: {', '.join(table.columns)}); "
                        f"regenerate the world with twotower generate")
    table["relevant"] = [value.split() for value in table["relevant_item_ids"]]
    return table
