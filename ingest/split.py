"""`assign_split(ds, split_cfg)`: which interactions train, validate and test the model.

Split types (``split_cfg["type"]``):

``leave_last_out``
    Per user, in (timestamp, source order) order: last interaction -> "test", second-to-last -> "valid", the rest
    "train". Users with fewer than 3 interactions go entirely to "train" (counted, logged).
``temporal``
    ``timestamp < valid_start`` -> "train", ``valid_start <= timestamp < test_start`` -> "valid",
    ``timestamp >= test_start`` -> "test". The bounds are unix seconds or date strings (ISO, taken as UTC);
    valid_start must be before test_start. An empty window is logged (and noted in the report) but allowed.
``given``
    The split the dataset ships with (``ds.given_split``, e.g. Amazon Scientific's RecBole files).
"""

from __future__ import annotations

import datetime as _dt
import numbers

import numpy as np
import pandas as pd

from .schema import DataError, Dataset, DropReport, log

SPLIT_TYPES = ("leave_last_out", "temporal", "given")
SPLIT_VALUES = ("train", "valid", "test")


def assign_split(ds: Dataset, split_cfg: dict, report: DropReport | None = None) -> pd.Series:
    """A Series aligned with ds.interactions (same index) holding "train" / "valid" / "test"."""
    if not isinstance(split_cfg, dict):
        raise DataError(f"the split block of the config must be a mapping; got {type(split_cfg).__name__}")
    kind = split_cfg.get("type")
    if kind not in SPLIT_TYPES:
        raise DataError(f"split.type {kind!r} is not known; valid types: {', '.join(SPLIT_TYPES)}")
    inter = ds.interactions
    if kind == "leave_last_out":
        out = _leave_last_out(inter, report)
    elif kind == "temporal":
        out = _temporal(inter, split_cfg, report)
    else:
        out = _given(ds)
    counts = out.value_counts()
    log.info("split %s on %s: %s", kind, ds.name, ", ".join(f"{s} {int(counts.get(s, 0))}" for s in SPLIT_VALUES))
    return out


def _leave_last_out(inter: pd.DataFrame, report: DropReport | None) -> pd.Series:
    n = len(inter)
    users = inter["user_id"].to_numpy()
    ts = inter["timestamp"].to_numpy()
    order = np.lexsort((np.arange(n), ts, pd.factorize(users)[0]))  # user, then timestamp, then source order
    sorted_users = pd.factorize(users[order])[0]
    sizes = np.bincount(sorted_users) if n else np.zeros(0, dtype=np.int64)
    group_size = sizes[sorted_users]
    # position from the end within the user's run (runs are contiguous after the sort)
    run_end = np.cumsum(sizes)[sorted_users]
    from_end = run_end - np.arange(n)  # 1 = last
    values = np.full(n, "train", dtype=object)
    values[(from_end == 1) & (group_size >= 3)] = "test"
    values[(from_end == 2) & (group_size >= 3)] = "valid"
    out = np.empty(n, dtype=object)
    out[order] = values
    short = int((sizes < 3).sum())
    if short:
        msg = f"{short} user(s) with fewer than 3 interactions: all their interactions are train"
        log.info("leave_last_out: %s", msg)
        if report is not None:
            report.warn("split", "leave_last_out: user(s) with < 3 interactions kept in train only", short)
    return pd.Series(out, index=inter.index, name="split", dtype=str)


def to_unix_seconds(value, field: str) -> float:
    """A split bound: number (unix seconds) or date / datetime / ISO string (UTC where no zone is given)."""
    if isinstance(value, bool):
        raise DataError(f"split.{field} must be a date or unix seconds; got {value!r}")
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, str):
        s = value.strip()
        try:
            return float(s)
        except ValueError:
            pass
    if isinstance(value, (str, _dt.date, _dt.datetime, pd.Timestamp)):
        try:
            t = pd.Timestamp(value)
        except (ValueError, TypeError) as e:
            raise DataError(f"split.{field}: cannot read {value!r} as a date ({e}); use e.g. 2024-03-01 or unix "
                            f"seconds") from None
        if t is pd.NaT:
            raise DataError(f"split.{field}: {value!r} is not a date")
        t = t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")
        return (t - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(seconds=1)
    raise DataError(f"split.{field} must be a date or unix seconds; got {value!r}")


def _temporal(inter: pd.DataFrame, cfg: dict, report: DropReport | None) -> pd.Series:
    for key in ("valid_start", "test_start"):
        if cfg.get(key) is None:
            raise DataError(f"split.{key} is required for split type 'temporal' (a date or unix seconds)")
    x = to_unix_seconds(cfg["valid_start"], "valid_start")
    y = to_unix_seconds(cfg["test_start"], "test_start")
    if not x < y:
        raise DataError(f"split.valid_start ({cfg['valid_start']!r}) must be before split.test_start "
                        f"({cfg['test_start']!r})")
    ts = inter["timestamp"].to_numpy().astype(float)
    values = np.where(ts < x, "train", np.where(ts < y, "valid", "test")).astype(object)
    out = pd.Series(values, index=inter.index, name="split", dtype=str)
    counts = out.value_counts()
    for s in SPLIT_VALUES:
        if int(counts.get(s, 0)) == 0:
            log.warning("temporal split: the %s window is empty (valid_start=%r, test_start=%r; timestamps %s..%s)",
                        s, cfg["valid_start"], cfg["test_start"],
                        int(ts.min()) if len(ts) else None, int(ts.max()) if len(ts) else None)
            if report is not None:
                report.warn("split", f"temporal: empty {s} window", 1)
    return out


def _given(ds: Dataset) -> pd.Series:
    given = ds.given_split
    if given is None:
        raise DataError(f"split.type 'given' needs a dataset that ships its own split; {ds.name!r} has none "
                        f"(use leave_last_out or temporal)")
    if len(given) != len(ds.interactions) or not given.index.equals(ds.interactions.index):
        raise DataError(f"{ds.name}: given_split is not aligned with the interactions")
    bad = ~given.isin(SPLIT_VALUES)
    if bad.any():
        raise DataError(f"{ds.name}: given_split holds {given[bad].iloc[0]!r}; expected one of "
                        f"{', '.join(SPLIT_VALUES)}")
    return pd.Series(given.to_numpy(), index=ds.interactions.index, name="split", dtype=str)


__all__ = ["assign_split", "to_unix_seconds", "SPLIT_TYPES"]
