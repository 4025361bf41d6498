"""What the directory formats (the research datasets, a generated world) share: finding their files, reading
plain delimited files, turning per-user sequences into interactions with a leave-one-out split.

Why it exists: each dataset module (:mod:`ingest.formats`) holds only what is peculiar to its dataset; the
steps several of them take the same way, with the same error messages, live here once.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pandas as pd

from ..schema import DataError, DropReport

SLICE_REASON = "max_users slice"   # the reason under which data.max_users counts the rows it leaves out
_RECBOLE_HEADER = re.compile(r"\w+:(token|token_seq|float|float_seq)")


def dataset_dir(cfg: dict, fmt: str) -> Path:
    if not cfg.get("path"):
        raise DataError(f"data.path (the dataset folder) is required for format {fmt!r}")
    d = Path(cfg["path"])
    if not d.is_dir():
        raise DataError(f"{fmt} dataset folder not found: {d}")
    return d


def need_file(d: Path, name: str) -> Path:
    p = d / name
    if not p.is_file():
        raise DataError(f"{p.parent.name} dataset file not found: {p}")
    return p


def read_tsv(path: Path, names: list[str], header: str = "auto", encoding: str = "utf-8",
             sep: str = "\t") -> pd.DataFrame:
    """A plain delimited file without quoting. header="auto": skip a RecBole `field:type` header line if present."""
    try:
        df = pd.read_csv(path, sep=sep, header=None, names=names, dtype=str, keep_default_na=False,
                         na_filter=False, quoting=csv.QUOTE_NONE, encoding=encoding, index_col=False)
    except (UnicodeDecodeError, pd.errors.ParserError) as e:
        raise DataError(f"{path}: cannot read: {e}") from None
    if header == "auto" and len(df) and any(_RECBOLE_HEADER.fullmatch(str(v).strip()) for v in df.iloc[0]):
        df = df.iloc[1:]
    elif header is True:
        df = df.iloc[1:]
    return df.reset_index(drop=True)


def sequences_to_frame(user_ids: list[str], sequences: list[list[str]],
                       event: str) -> tuple[pd.DataFrame, pd.Series]:
    """Per-user ordered item lists -> interactions (timestamp = position) and the leave-one-out split."""
    lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
    n = int(lengths.sum())
    pos = np.arange(n) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    from_end = np.repeat(lengths, lengths) - pos  # 1 = last
    split = np.where(from_end == 1, "test", np.where(from_end == 2, "valid", "train"))
    split[np.repeat(lengths < 3, lengths)] = "train"
    inter = pd.DataFrame({
        "user_id": pd.Series(np.repeat(np.asarray(user_ids, dtype=object), lengths), dtype=str),
        "item_id": pd.Series([i for s in sequences for i in s], dtype=str),
        "timestamp": pos.astype(np.int64),
        "event": pd.Series([event] * n, dtype=str),
        "weight": np.ones(n, dtype=float),
    })
    inter["__split"] = split
    inter = inter.sort_values(["user_id", "timestamp"], kind="stable").reset_index(drop=True)
    given = pd.Series(inter.pop("__split").to_numpy(), index=inter.index, name="split", dtype=str)
    return inter, given


def drop_unknown_items(inter: pd.DataFrame, given: pd.Series | None, items: pd.DataFrame, source: str,
                       report: DropReport, on_bad_rows: str) -> tuple[pd.DataFrame, pd.Series | None]:
    unknown = ~inter["item_id"].isin(set(items["item_id"]))
    if unknown.any():
        first = inter[unknown].iloc[0]
        example = f"item {first['item_id']}"   # never a user id: logs stay free of them (data.hash_user_ids)
        if on_bad_rows == "error":
            raise DataError(f"{source}: {int(unknown.sum())} interaction(s) with an item that has no usable "
                            f"item row (field 'item_id'), e.g. {example} [on_bad_rows: error]")
        report.drop(source, "unknown item", int(unknown.sum()), example)
        inter = inter[~unknown].reset_index(drop=True)
        if given is not None:
            given = pd.Series(given[~unknown].to_numpy(), index=inter.index, name="split", dtype=str)
    return inter, given


def slice_users(order: list[str], max_users: int | None) -> set[str] | None:
    return None if max_users is None else set(order[:max_users])


def items_frame(ids, titles, descriptions=None, categories=None, brands=None, extra=None) -> pd.DataFrame:
    n = len(ids)
    blank = [""] * n
    cols = {"item_id": ids, "title": titles, "description": descriptions or blank, "category": categories or blank,
            "brand": brands or blank}
    df = pd.DataFrame({k: pd.Series(v, dtype=str) for k, v in cols.items()})
    df["price"] = np.full(n, np.nan)
    for k, v in (extra or {}).items():
        df[k] = pd.Series(v, dtype=str)
    return df
