"""Reading a shop's own files (CSV/TSV, Parquet, JSONL) and turning them into normalised, validated frames.

Every problem is reported with the file, the row as the user sees it in that file and the field:

* CSV/TSV: ``line N`` is the physical line in the file (header = line 1, so the first data row is line 2; blank
  lines and quoted fields spanning several lines are accounted for);
* JSONL: ``line N`` is the physical line of the record (blank lines are skipped but still counted);
* JSON array / Parquet: ``row N`` is the 1-based record number.

:func:`read_table` returns every column as ``str`` (missing values as ``""``) and indexes the frame by those
numbers (``df.attrs["row_label"]`` says whether they are lines or rows, ``df.attrs["source"]`` names the file);
the ``normalize_*`` functions use them in their messages. Rows that cannot be used are dropped and counted in
the :class:`~ingest.schema.DropReport` with a reason, or, with ``on_bad_rows="error"``, stop loading with a
:class:`~ingest.schema.DataError` naming the first offending lines.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from .schema import INTERACTION_COLUMNS, ITEM_COLUMNS, ITEM_TEXT_COLUMNS, USER_COLUMNS, DataError, DropReport

ON_BAD_ROWS = ("drop", "error")
TIMESTAMP_UNITS = ("auto", "s", "ms", "us", "ns")   # data.timestamp_unit: what a numeric timestamp counts
CSV_SEPARATORS = {".csv": ",", ".tsv": "\t", ".tab": "\t"}
JSON_SUFFIXES = (".jsonl", ".ndjson", ".json")
PARQUET_SUFFIXES = (".parquet", ".pq")
SUPPORTED_SUFFIXES = (*CSV_SEPARATORS, *PARQUET_SUFFIXES, *JSON_SUFFIXES)

REQUIRED_COLUMNS = {
    "items": ("item_id", "title"),
    "interactions": ("user_id", "item_id", "timestamp"),
    "users": ("user_id",),
}

# data.timestamp_unit: seconds per unit; under auto, the magnitude below which a number is in each unit (1e11 s is
# the year 5138, 1e11 ms is 1973). A timestamp past the year 9999 (or before year 1) is out of range.
UNIT_SECONDS = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}
AUTO_UNITS = ("s", "ms", "us", "ns")
AUTO_UPPER_BOUNDS = (1e11, 1e14, 1e17, 1e20)
LATEST_SECONDS = 253402300799.0
_MAX_LISTED = 5  # how many offending rows / ids a message names
_CSV_FIELD_LIMIT = 2**31 - 1  # the csv module's field limit while reading a shop's file: no limit in practice
ID_COLUMNS = ("user_id", "item_id")
# What a missing value turns into on its way through pandas, NumPy or a database export: never an id.
MISSING_ID_MARKERS = frozenset({"nan", "NaN", "NAN", "None", "null", "NULL"})


# ---------------------------------------------------------------------------------------------------------------
# Reading


def read_table(path, *, required: Sequence[str], kind: str) -> pd.DataFrame:
    """Read one of a shop's files by its extension; every column comes back as str, missing values as "".

    The index holds the line (CSV/TSV/JSONL) or row (Parquet, JSON array) number each record has in the file.
    Raises DataError for a missing file, an unknown extension, bytes that are not UTF-8, a file that cannot be
    parsed, or a missing required column.
    """
    path = Path(path)
    if not path.is_file():
        what = "is a directory, not a file" if path.is_dir() else "not found"
        raise DataError(f"{kind} file {what}: {path}")
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise DataError(f"{path}: unknown file type {suffix or '(no extension)'!r} for the {kind} file; "
                        f"use one of {', '.join(SUPPORTED_SUFFIXES)}")
    if suffix in PARQUET_SUFFIXES:
        df, label = _read_parquet(path), "row"
    else:
        text = _decode_utf8(path)
        if suffix in CSV_SEPARATORS:
            df, label = _read_csv(path, text, CSV_SEPARATORS[suffix]), "line"
        else:
            df, label = _read_json(path, text)
    df.columns = [str(c).strip() for c in df.columns]
    dupes = sorted({c for c in df.columns if list(df.columns).count(c) > 1})
    if dupes:
        raise DataError(f"{path}: column(s) {', '.join(map(repr, dupes))} appear more than once in the header")
    for col in required:
        if col not in df.columns:
            found = ", ".join(df.columns) if len(df.columns) else "no columns"
            raise DataError(f"{path}: missing column {col!r} (found: {found})")
    df.attrs["source"] = str(path)
    df.attrs["row_label"] = label
    return df


def _decode_utf8(path: Path) -> str:
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        bad = data[e.start:e.start + 4]
        raise DataError(f"{path}: not valid UTF-8 at line {line} (byte offset {e.start}: {bad!r}); "
                        f"save the file as UTF-8") from None
    return text[1:] if text.startswith("\ufeff") else text


def _read_csv(path: Path, text: str, sep: str) -> pd.DataFrame:
    if not text.strip():
        raise DataError(f"{path}: file is empty (expected a header line)")
    kind = "TSV" if sep == "\t" else "CSV"
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", pd.errors.ParserWarning)
            df = pd.read_csv(io.StringIO(text), sep=sep, dtype=str, keep_default_na=False, na_filter=False,
                             skip_blank_lines=True, index_col=False)
    except pd.errors.ParserError as e:
        _raise_extra_fields(path, text, sep, f"cannot parse as {kind}: {str(e).strip()}")
    if any(issubclass(w.category, pd.errors.ParserWarning) for w in caught):
        _raise_extra_fields(path, text, sep, f"cannot parse as {kind}: rows do not match the header")
    df.index = pd.Index(_csv_line_numbers(path, text, sep, len(df)), name="line")
    return df


def _csv_records(path: Path, text: str, sep: str) -> Iterator[tuple[int, list[str]]]:
    """(line the record starts on, fields) for every record, fields of any size (the csv module stops at 128 KiB
    by default); a record the csv module cannot read is a DataError naming its line."""
    limit = csv.field_size_limit()
    csv.field_size_limit(max(limit, _CSV_FIELD_LIMIT))
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=sep)
    start = 1
    try:
        while True:
            try:
                record = next(reader)
            except StopIteration:
                return
            except csv.Error as err:
                raise DataError(f"{path}: line {start}: cannot parse as {'TSV' if sep == chr(9) else 'CSV'}: "
                                f"{err}") from None
            yield start, record
            start = reader.line_num + 1
    finally:
        csv.field_size_limit(limit)


def _raise_extra_fields(path: Path, text: str, sep: str, otherwise: str) -> None:
    """pandas would silently shift or cut a row with more fields than the header: name that row instead."""
    header = None
    for start, record in _csv_records(path, text, sep):
        if _csv_blank(record):
            continue
        if header is None:
            header = record
        elif len(record) > len(header):
            raise DataError(f"{path}: line {start} has {len(record)} fields but the header has {len(header)} "
                            f"(an unquoted {'tab' if sep == chr(9) else 'comma'} inside a value?)")
    raise DataError(f"{path}: {otherwise}")


def _csv_blank(record: list) -> bool:
    return not record or (len(record) == 1 and record[0].strip() == "")


def _csv_line_numbers(path: Path, text: str, sep: str, n_rows: int) -> np.ndarray:
    """Physical line on which each data row starts (header = line 1), as pandas counts rows."""
    plain = text.replace("\r\n", "\n")
    simple = ('"' not in plain and "\r" not in plain and not plain[:1].isspace()
              and re.search(r"\n[ \t]*\n.", plain, flags=re.S) is None)
    if simple:
        return np.arange(2, 2 + n_rows)
    # Quoted fields may span lines; pandas skips blank lines (before the header too).
    starts = [start for start, record in _csv_records(path, text, sep) if not _csv_blank(record)]
    if len(starts) != n_rows + 1:  # csv and pandas read an odd file differently: plain numbering
        return np.arange(2, 2 + n_rows)
    return np.asarray(starts[1:])


def _read_parquet(path: Path) -> pd.DataFrame:
    try:
        import pyarrow.parquet as pq
        table = pq.read_table(path)
    except Exception as e:  # pyarrow raises several types for a damaged file
        raise DataError(f"{path}: cannot read as Parquet: {e}") from None
    for field in table.schema:
        if field.name in ID_COLUMNS and not _scalar_id_type(field.type):
            raise DataError(f"{path}: column {field.name!r} holds {field.type} values; ids must be strings or "
                            f"integers")
    df = table.to_pandas()
    df = pd.DataFrame({str(c): _as_text(df[c]) for c in df.columns})
    df.index = pd.RangeIndex(1, len(df) + 1, name="row")
    return df


def _scalar_id_type(kind) -> bool:
    """An Arrow type an id column may have: text or integers (floats too: pandas stores integers with gaps so)."""
    import pyarrow as pa

    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    return (pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_integer(kind)
            or pa.types.is_floating(kind) or pa.types.is_null(kind))


def _as_text(col: pd.Series) -> pd.Series:
    """A column of any dtype as str, missing -> "". Whole floats print without '.0' (1700000000.0 -> 1700000000)."""
    if pd.api.types.is_float_dtype(col.dtype):
        vals = col.to_numpy(dtype=float, na_value=np.nan)
        out = [("" if math.isnan(v) else (str(int(v)) if v.is_integer() and abs(v) < 1e18 else repr(float(v))))
               for v in vals]
        return pd.Series(out, index=col.index, dtype=str)
    if isinstance(col.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_any_dtype(col.dtype):
        return pd.Series([("" if pd.isna(v) else pd.Timestamp(v).isoformat()) for v in col], index=col.index,
                         dtype=str)
    if pd.api.types.is_string_dtype(col.dtype) and not pd.api.types.is_object_dtype(col.dtype):
        return col.astype(str).fillna("")
    if (pd.api.types.is_integer_dtype(col.dtype) or pd.api.types.is_bool_dtype(col.dtype)) \
            and not col.isna().any():
        return col.astype(str)
    if pd.api.types.is_object_dtype(col.dtype):
        notna = col.notna()
        if col[notna].map(type).eq(str).all():  # plain strings with gaps: no per-cell formatting needed
            return col.where(notna, "").astype(str)
    return pd.Series([_cell_text(v) for v in col], index=col.index, dtype=str)


def _cell_text(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        if math.isnan(v):
            return ""
        return str(int(v)) if v.is_integer() and abs(v) < 1e18 else repr(float(v))
    if isinstance(v, (list, dict, tuple, np.ndarray)):
        if isinstance(v, np.ndarray):
            v = v.tolist()
        return json.dumps(v, ensure_ascii=False, default=str)
    if isinstance(v, bytes):
        return v.decode("utf-8", errors="replace")
    try:
        if pd.isna(v):
            return ""
    except (TypeError, ValueError):
        pass
    return str(v)


def _read_json(path: Path, text: str) -> tuple[pd.DataFrame, str]:
    stripped = text.lstrip()
    if not stripped:
        raise DataError(f"{path}: file is empty (expected one JSON object per line)")
    if stripped.startswith("["):  # a JSON array of records
        try:
            records = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: not valid JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
        numbers = list(range(1, len(records) + 1))
        label = "row"
    else:
        records, numbers = [], []
        for lineno, line in enumerate(text.split("\n"), start=1):  # not splitlines(): U+2028 is valid JSON
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise DataError(f"{path}: line {lineno}: not valid JSON (column {e.colno}: {e.msg})") from None
            numbers.append(lineno)
        label = "line"
    for rec, n in zip(records, numbers):
        if not isinstance(rec, dict):
            raise DataError(f"{path}: {label} {n}: expected a JSON object with named fields, "
                            f"got {type(rec).__name__}")
        for column in ID_COLUMNS:
            value = rec.get(column)
            if isinstance(value, (list, dict, bool)):
                raise DataError(f"{path}: {label} {n}: {column!r} is a JSON {type(value).__name__} "
                                f"({json.dumps(value)[:60]}); ids must be strings or integers")
    columns: dict[str, None] = {}
    for rec in records:
        for k in rec:
            columns.setdefault(str(k), None)
    df = pd.DataFrame({c: pd.Series([_cell_text(rec.get(c)) for rec in records], dtype=str) for c in columns})
    df.index = pd.Index(numbers, name=label)
    return df, label


# ---------------------------------------------------------------------------------------------------------------
# Helpers shared by the normalisers


def _check_policy(on_bad_rows: str) -> None:
    if on_bad_rows not in ON_BAD_ROWS:
        raise DataError(f"on_bad_rows must be one of {', '.join(ON_BAD_ROWS)}; got {on_bad_rows!r}")


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
        s = pd.Series([_cell_text(v) for v in s], dtype=str)
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
    _check_policy(on_bad_rows)
    for col in REQUIRED_COLUMNS["items"]:
        if col not in df.columns:
            raise DataError(f"{source}: missing column {col!r} (found: {', '.join(map(str, df.columns))})")
    numbers, label = _row_numbers(df)
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
    _check_policy(on_bad_rows)
    for col in REQUIRED_COLUMNS["interactions"]:
        if col not in df.columns:
            raise DataError(f"{source}: missing column {col!r} (found: {', '.join(map(str, df.columns))})")
    numbers, label = _row_numbers(df)
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
    _check_policy(on_bad_rows)
    if "user_id" not in df.columns:
        raise DataError(f"{source}: missing column 'user_id' (found: {', '.join(map(str, df.columns))})")
    numbers, label = _row_numbers(df)
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


__all__ = ["read_table", "normalize_items", "normalize_interactions", "normalize_users", "parse_timestamps",
           "TimestampReader",
           "first_users", "REQUIRED_COLUMNS", "ON_BAD_ROWS", "SUPPORTED_SUFFIXES"]
