"""Format ``generated``: a world written by ``twotower generate`` (``data.path`` = its directory).

Why it exists: the generated world is the shop's files plus ``world.json``, whose time cut-offs are the world's
own split. This module is the one place that knows those file names and reads ``world.json``: the generator
writes under these names, the in-memory loader and ``twotower prepare`` both read through :func:`read_world`.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..schema import Dataset, DataError
from ..split import assign_split
from . import files as shop_files
from .common import dataset_dir

FILES = {"items": "items.csv", "interactions": "interactions.csv", "users": "users.csv"}
WORLD = "world.json"


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
