"""Format ``files``: the shop's own ``items``, ``interactions`` and optional ``users`` files (CSV/TSV, Parquet or
JSONL), read by :mod:`ingest.read` and checked by :mod:`ingest.normalize`.

Why it exists: it is the format a shop trains on; ``max_users`` keeps the first N users in order of first
appearance in the interactions file.
"""

from __future__ import annotations

from pathlib import Path

from ..normalize import first_users, normalize_interactions, normalize_items, normalize_users
from ..read import read_table
from ..schema import REQUIRED_COLUMNS, DataError, Dataset, DropReport
from .common import SLICE_REASON


def load(cfg: dict, on_bad_rows: str, max_users: int | None) -> Dataset:
    """The shop's files as a Dataset (see the module docstring)."""
    for key in ("items", "interactions"):
        if not cfg.get(key):
            raise DataError(f"data.{key} (path to the {key} file) is required for format 'files'")
    report = DropReport()
    items_path, inter_path = Path(cfg["items"]), Path(cfg["interactions"])

    raw_items = read_table(items_path, required=REQUIRED_COLUMNS["items"], kind="items")
    items = normalize_items(raw_items, str(items_path), report, on_bad_rows)

    raw_inter = read_table(inter_path, required=REQUIRED_COLUMNS["interactions"], kind="interactions")
    kept_users = None
    keep = first_users(raw_inter["user_id"].astype(str).str.strip(), max_users)
    if keep is not None:
        report.drop(str(inter_path), SLICE_REASON, int((~keep).sum()))
        attrs = dict(raw_inter.attrs)
        raw_inter = raw_inter[keep]
        raw_inter.attrs.update(attrs)
        kept_users = set(raw_inter["user_id"].astype(str).str.strip())
    interactions = normalize_interactions(raw_inter, items, str(inter_path), report, on_bad_rows,
                                          cfg.get("timestamp_unit", "auto"))


    users = None
    if cfg.get("users"):
        users_path = Path(cfg["users"])
        raw_users = read_table(users_path, required=REQUIRED_COLUMNS["users"], kind="users")
        users = normalize_users(raw_users, str(users_path), report, on_bad_rows)
        if kept_users is not None:
            in_slice = users["user_id"].isin(kept_users)
            report.drop(str(users_path), SLICE_REASON, int((~in_slice).sum()))
            users = users[in_slice].reset_index(drop=True)
    name = cfg.get("name") or inter_path.stem
    return Dataset(items=items, interactions=interactions, users=users, report=report, name=name)
