"""Turning a shop's raw tables (from :mod:`ingest.read`) into the normalised, checked frames of :mod:`ingest.schema`.

Why it exists: a row that cannot be used must be named (file, line, field) and counted, never silently kept,
changed or dropped. Rows that cannot be used are dropped and counted in the :class:`~ingest.schema.DropReport`
with a reason, or, with ``on_bad_rows="error"``, stop loading with a :class:`~ingest.schema.DataError` naming
the first offending lines. Ids must be unique, timestamps are read in ``data.timestamp_unit`` (or refused when
their unit is ambiguous), prices and weights parsed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from .read import cell_text
from .schema import (
    INTERACTION_COLUMNS,
    ITEM_COLUMNS,
    ITEM_TEXT_COLUMNS,
    REQUIRED_COLUMNS,
    USER_COLUMNS,
    DataError,
    DropReport,
)

ON_BAD_ROWS = ("drop", "error")
TIMESTAMP_UNITS = ("auto", "s", "ms", "us", "ns")   # data.timestamp_unit: what a numeric timestamp counts

# data.timestamp_unit: seconds per unit; under auto, the magnitude below which a number is in each unit (1e11 s is
# the year 5138, 1e11 ms is 1973). A timestamp past the year 9999 (or before year 1) is out of range.
UNIT_SECONDS = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}
AUTO_UNITS = ("s", "ms", "us", "ns")
AUTO_UPPER_BOUNDS = (1e11, 1e14, 1e17, 1e20)
LATEST_SECONDS = 253402300799.0
_MAX_LISTED = 5  # how many offending rows / ids a message names
# What a missing value turns into on its way through pandas, NumPy or a database export: never an id.
MISSING_ID_MARKERS = frozenset({"nan", "NaN", "NAN", "None", "null", "NULL"})


# ---------------------------------------------------------------------------------------------------------------
# Helpers shared by the normalisers


def _check_policy(on_bad_rows: str) -> None:
    if on_bad_rows not in ON_BAD_ROWS:
        raise DataError(f"on_bad_rows must be one of {', '.join(ON_BAD_ROWS)}; got {on_bad_rows!r}")


def _checked_rows(df: pd.DataFrame, kind: str, source: str, on_bad_rows: str) -> tuple[np.ndarray, str]:
    """The policy and the ``kind`` file's required columns checked; then each row's number in its file."""
    _check_policy(on_bad_rows)
    for col in REQUIRED_COLUMNS[kind]:
        if col not in df.columns:
            raise DataError(f"{source}: missing column {col!r} (found: {', '.join(map(str, df.columns))})")
    return _row_numbers(df)


def _row_numbers(df: pd.DataFrame) -> tuple[np.ndarray, str]:
    """The number each row has in its file (from read_table), or its 1-based position for a frame built in code."""
    label = df.attrs.get("row_label")
    if label and pd.api.types.is_integer_dtype(df.index.dtype):
        return np.asarray(df.index), label
    return np.arange(1, len(df) + 1), "row"


def _text(df: pd.DataFrame, col: str) -> pd.Series:
    """Column as stripped str, missing -> "" (positional index)."""
    if col not in df.columns:
        return pd.Series([""] * len(df), dtype=str)
    s = df[col].reset_index(drop=True)
    if s.dtype != object and not pd.api.types.is_string_dtype(s.dtype):
        s = pd.Series([cell_text(v) for v in s], dtype=str)
    return s.fillna("").astype(str).str.strip()


def _listing(numbers, label: str, shown=None, limit: int = _MAX_LISTED) -> str:
    numbers = list(numbers)
    parts = []
    for i, n in enumerate(numbers[:limit]):
        parts.append(f"{label} {n}" + (f" ({shown[i]})" if shown is not None else ""))
    more = len(numbers) - limit
    return ", ".join(parts) + (f" and {more} more" if more > 0 else "")


def _bad_rows(mask: np.ndarray, *, df_numbers: np.ndarray, label: str, source: str, reason: str, field: str,
              values: pd.Series | None, report: DropReport, on_bad_rows: str, shown_as: str | None = None) -> None:
    """Record (or refuse) the rows in `mask` as dropped for `reason`.

    `values` is shown next to each row as `shown_as=value` (`shown_as` defaults to the field itself).
    """
    idx = np.flatnonzero(mask)
    if len(idx) == 0:
        return
    name = shown_as or field
    shown = None if values is None else [f"{name}={values.iloc[i]!r}" for i in idx[:_MAX_LISTED]]
    where = _listing(df_numbers[idx], label, shown)
    if on_bad_rows == "error":
        raise DataError(f"{source}: {len(idx)} row(s) with {reason} (field {field!r}): {where} "
                        f"[on_bad_rows: error; use on_bad_rows: drop to skip such rows]")
    first = f"{label} {df_numbers[idx[0]]}" + (f" {shown[0]}" if shown is not None else "")
    report.drop(source, reason, len(idx), first)


def _extra_columns(df: pd.DataFrame, known: Sequence[str]) -> dict[str, pd.Series]:
    return {c: _text(df, c) for c in df.columns if c not in known and not str(c).startswith("__")}


def _empty_error(source: str, what: str, n_read: int, report: DropReport, sources: Sequence[str]) -> DataError:
    reasons = [f"{reason}: {n}" for (src, reason), n in sorted(report.counts.items()) if src in sources]
    why = "; ".join(reasons) if reasons else "the file has no data rows"
    return DataError(f"{source}: no {what} left after filtering ({n_read} row(s) read; dropped: {why})")


# ---------------------------------------------------------------------------------------------------------------
# Normalisers


def _missing_ids(ids: pd.Series, field: str, numbers: np.ndarray, label: str, source: str, report: DropReport,
                 on_bad_rows: str, already: np.ndarray | None = None) -> np.ndarray:
    """Rows without an id: empty, or a missing-value marker (``NaN``, ``null``, ``None``) that pandas, NumPy or a
    database export left where a value was missing. Such a row is dropped and counted (or refused), never kept
    under a made-up id. Returns the mask of those rows."""
    already = np.zeros(len(ids), bool) if already is None else already
    empty = (ids == "").to_numpy() & ~already
    marker = ids.isin(MISSING_ID_MARKERS).to_numpy() & ~already
    kw = dict(df_numbers=numbers, label=label, source=source, field=field, report=report, on_bad_rows=on_bad_rows)
    _bad_rows(empty, reason=f"empty {field}", values=None, **kw)
    _bad_rows(marker, reason=f"{field} is a missing-value marker (NaN, null, None)", values=ids, **kw)
    return empty | marker


def _refuse_duplicates(ids: pd.Series, considered: np.ndarray, numbers: np.ndarray, label: str, source: str,
                       kind: str) -> None:
    """Duplicate ids are always an error (which row would win is anyone's guess): list them with their rows."""
    dup = ids.duplicated(keep=False).to_numpy() & considered
    if not dup.any():
        return
    groups: dict[str, list] = {}
    for i in np.flatnonzero(dup):
        groups.setdefault(ids.iloc[i], []).append(int(numbers[i]))
    listed = "; ".join(f"{k!r} at {label}s {', '.join(map(str, v[:10]))}" for k, v in list(groups.items())[:5])
    more = f"; and {len(groups) - 5} more id(s)" if len(groups) > 5 else ""
    raise DataError(f"{source}: duplicate {kind}_id: {listed}{more} ({kind} ids must be unique)")


def normalize_items(df: pd.DataFrame, source: str, report: DropReport, on_bad_rows: str = "drop") -> pd.DataFrame:
    """Items in ITEM_COLUMNS (+ extra columns as str), item_id unique, title never empty, price float or NaN."""
    numbers, label = _checked_rows(df, "items", source, on_bad_rows)
    item_id = _text(df, "item_id")

    empty_id = _missing_ids(item_id, "item_id", numbers, label, source, report, on_bad_rows)

    _refuse_duplicates(item_id, ~empty_id, numbers, label, source, "item")

    out = {"item_id": item_id}
    for col in ITEM_TEXT_COLUMNS:
        out[col] = _text(df, col)
    title_empty = (out["title"] == "").to_numpy() & ~empty_id
    _bad_rows(title_empty, df_numbers=numbers, label=label, source=source, reason="empty title", field="title",
              values=item_id, shown_as="item_id", report=report, on_bad_rows=on_bad_rows)

    raw_price = _text(df, "price")
    price = pd.to_numeric(raw_price.str.replace(r"^[$€£¥]\s*|\s*[$€£¥]$", "", regex=True), errors="coerce")
    price = price.astype(float).where(np.isfinite(price.astype(float)))
    bad_price = (price.isna() & (raw_price != "")).to_numpy()
    if bad_price.any():
        i = np.flatnonzero(bad_price)[0]
        report.warn(source, "unparseable price (kept as NaN)", int(bad_price.sum()),
                    f"{label} {numbers[i]} price={raw_price.iloc[i]!r}")
    out["price"] = price
    out.update(_extra_columns(df, ITEM_COLUMNS))

    items = pd.DataFrame(out)
    keep = ~(empty_id | title_empty)
    items = items[keep].reset_index(drop=True)
    if items.empty:
        raise _empty_error(source, "items", len(df), report, [source])
    return items


class TimestampReader:
    """Numeric timestamps of one file in ``data.timestamp_unit``: ``s``, ``ms``, ``us``, ``ns`` or ``auto``.

    ``auto`` reads each number's unit from its magnitude (below 1e11 seconds, also ordinals; below 1e14
    milliseconds; below 1e17 microseconds; below 1e20 nanoseconds) and holds the whole file to the unit of its
    first number: a value of another magnitude is ambiguous (a file mixing units, or one value off by 1000x) and
    refused with both lines. One reader serves every chunk of a file read in pieces. A number that lands outside
    the years 1-9999 (``1e300``) is out of range, never wrapped into some int64.
    """

    def __init__(self, unit: str = "auto", source: str = ""):
        if unit not in TIMESTAMP_UNITS:
            raise DataError(f"data.timestamp_unit must be one of {', '.join(TIMESTAMP_UNITS)}; got {unit!r}")
        self.unit = unit
        self.source = source
        self.first: tuple[str, str] | None = None   # auto: (unit, "line N ('raw')") of the file's first number

    def seconds(self, numbers: pd.Series, shown: pd.Series, rows: np.ndarray, label: str) -> tuple[pd.Series,
                                                                                                    np.ndarray]:
        """Float numbers (NaN: not a number) -> (unix seconds, out-of-range mask). ``shown``: the raw text,
        ``rows``/``label``: each row's number in the file, for the messages."""
        values = numbers.to_numpy(dtype=float)
        present = ~np.isnan(values)
        if self.unit == "auto":
            magnitude = np.abs(values)
            kind = np.searchsorted(AUTO_UPPER_BOUNDS, magnitude, side="right")   # 0 s, 1 ms, 2 us, 3 ns, 4 none
            usable = present & (kind < len(AUTO_UNITS))
            if usable.any():
                at = np.flatnonzero(usable)
                if self.first is None:
                    i = at[0]
                    self.first = (AUTO_UNITS[kind[i]], f"{label} {rows[i]} ({shown.iloc[i]!r})")
                expected = AUTO_UNITS.index(self.first[0])
                other = at[kind[at] != expected]
                if len(other):
                    i = other[0]
                    raise DataError(
                        f"{self.source}: {label} {rows[i]}: timestamp {shown.iloc[i]!r} reads as "
                        f"{AUTO_UNITS[kind[i]]} but {self.first[1]} as {self.first[0]} (field 'timestamp'): the "
                        f"unit is ambiguous; set data.timestamp_unit to s, ms, us or ns")
            factor = np.array([UNIT_SECONDS[u] for u in AUTO_UNITS] + [np.nan])[np.minimum(kind, len(AUTO_UNITS))]
            scaled = values * factor
        else:
            scaled = values * UNIT_SECONDS[self.unit]
        out_of_range = present & ~(np.abs(np.nan_to_num(scaled, nan=np.inf)) <= LATEST_SECONDS)
        return pd.Series(np.where(out_of_range, np.nan, scaled), index=numbers.index), out_of_range


def parse_timestamps(raw: pd.Series, reader: TimestampReader | None = None, rows: np.ndarray | None = None,
                     label: str = "row") -> tuple[pd.Series, np.ndarray]:
    """Strings/numbers -> (float unix seconds, NaN where unusable; mask of numbers out of range).

    Numbers are read in ``reader``'s unit (default ``auto``); anything else goes through pd.to_datetime (UTC; a
    date without a zone is taken as UTC).
    """
    reader = reader or TimestampReader()
    s = raw.reset_index(drop=True)
    rows = np.arange(1, len(s) + 1) if rows is None else rows
    if pd.api.types.is_numeric_dtype(s.dtype) and not pd.api.types.is_bool_dtype(s.dtype):
        num = s.astype(float)
        strings = pd.Series([""] * len(s), dtype=str)
        shown = s.astype(str)
    else:
        strings = s.fillna("").astype(str).str.strip()
        num = pd.to_numeric(strings, errors="coerce").astype(float)
        shown = strings
    num = num.where(np.isfinite(num) | num.isna(), np.inf)   # inf stays a number: out of range, not unparseable
    out, out_of_range = reader.seconds(num, shown, rows, label)
    todo = out.isna() & (strings != "") & num.isna()
    if todo.any():
        sub = strings[todo]
        dt = pd.to_datetime(sub, utc=True, errors="coerce", format="ISO8601")
        rest = dt.isna()
        if rest.any():
            dt[rest] = pd.to_datetime(sub[rest], utc=True, errors="coerce", format="mixed")
        epoch = pd.Timestamp(0, tz="UTC")
        secs = (dt - epoch) / pd.Timedelta(seconds=1)
        out[todo] = secs.astype(float).to_numpy()
    return out, out_of_range


def normalize_interactions(df: pd.DataFrame, items: pd.DataFrame, source: str, report: DropReport,
                           on_bad_rows: str = "drop", timestamps: TimestampReader | str = "auto") -> pd.DataFrame:
    """Interactions in INTERACTION_COLUMNS, every item known, sorted stably by (user_id, timestamp).
    ``timestamps``: the unit of numeric timestamps (data.timestamp_unit), or the reader of a file read in chunks."""
    numbers, label = _checked_rows(df, "interactions", source, on_bad_rows)
    user_id = _text(df, "user_id")
    item_id = _text(df, "item_id")
    kw = dict(df_numbers=numbers, label=label, source=source, report=report, on_bad_rows=on_bad_rows)

    dropped = np.zeros(len(df), dtype=bool)

    def drop(mask, reason, field, values):
        nonlocal dropped
        mask = np.asarray(mask) & ~dropped
        _bad_rows(mask, reason=reason, field=field, values=values, **kw)
        dropped |= mask

    for column, ids in (("user_id", user_id), ("item_id", item_id)):
        dropped |= _missing_ids(ids, column, numbers, label, source, report, on_bad_rows, dropped)

    reader = timestamps if isinstance(timestamps, TimestampReader) else TimestampReader(timestamps, source)
    ts, out_of_range = parse_timestamps(df["timestamp"], reader, numbers, label)
    drop(out_of_range, "timestamp out of range (before year 1 or after 9999 in data.timestamp_unit "
                       f"{reader.unit!r})", "timestamp", _text(df, "timestamp"))
    drop(ts.isna().to_numpy(), "unparseable timestamp", "timestamp", _text(df, "timestamp"))

    known = pd.unique(items["item_id"].astype(str).to_numpy())
    drop((~item_id.isin(known)).to_numpy(), "unknown item", "item_id", item_id)

    if "weight" in df.columns:
        raw_w = _text(df, "weight")
        w = pd.to_numeric(raw_w, errors="coerce").astype(float)
        w = w.where(np.isfinite(w))
        bad_w = (w.isna() & (raw_w != "")).to_numpy() & ~dropped
        if bad_w.any():
            i = np.flatnonzero(bad_w)[0]
            report.warn(source, "unparseable weight (set to 1.0)", int(bad_w.sum()),
                        f"{label} {numbers[i]} weight={raw_w.iloc[i]!r}")
        w = w.fillna(1.0)
        drop((w <= 0).to_numpy(), "non-positive weight", "weight", raw_w)
    else:
        w = pd.Series(np.ones(len(df)))

    out = pd.DataFrame({
        "user_id": user_id,
        "item_id": item_id,
        "timestamp": np.floor(ts.fillna(0).to_numpy()).astype(np.int64),
        "event": _text(df, "event"),
        "weight": w.to_numpy(dtype=float),
    })[~dropped]
    if out.empty:
        raise _empty_error(source, "interactions", len(df), report, [source])
    out = out.sort_values(["user_id", "timestamp"], kind="stable").reset_index(drop=True)
    return out[list(INTERACTION_COLUMNS)]


def normalize_users(df: pd.DataFrame, source: str, report: DropReport, on_bad_rows: str = "drop") -> pd.DataFrame:
    """Users in USER_COLUMNS (+ other columns as str), user_id unique, profile_text "" where missing."""
    numbers, label = _checked_rows(df, "users", source, on_bad_rows)
    user_id = _text(df, "user_id")
    empty = _missing_ids(user_id, "user_id", numbers, label, source, report, on_bad_rows)
    _refuse_duplicates(user_id, ~empty, numbers, label, source, "user")
    out = {"user_id": user_id, "profile_text": _text(df, "profile_text")}
    out.update(_extra_columns(df, USER_COLUMNS))
    return pd.DataFrame(out)[~empty].reset_index(drop=True)


def first_users(user_ids: pd.Series, n: int | None) -> np.ndarray | None:
    """Mask keeping the rows of the first `n` distinct users in order of appearance (None: keep everything)."""
    if n is None:
        return None
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise DataError(f"data.max_users must be a positive integer or null; got {n!r}")
    order = pd.unique(user_ids.to_numpy())
    return user_ids.isin(set(order[:int(n)])).to_numpy()


__all__ = ["normalize_items", "normalize_interactions", "normalize_users", "parse_timestamps", "TimestampReader",
           "first_users", "ON_BAD_ROWS", "TIMESTAMP_UNITS"]
