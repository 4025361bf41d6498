"""Reading a shop's own files (CSV/TSV, Parquet, JSONL) into frames of text, every record numbered as in its file.

Why it exists: every later check names "the file, the line, the field", so reading keeps each record's number
in the file it came from; what the values mean is :mod:`ingest.normalize`'s business, not this module's.

* CSV/TSV: ``line N`` is the physical line in the file (header = line 1, so the first data row is line 2; blank
  lines and quoted fields spanning several lines are accounted for);
* JSONL: ``line N`` is the physical line of the record (blank lines are skipped but still counted);
* JSON array / Parquet: ``row N`` is the 1-based record number.

:func:`read_table` returns every column as ``str`` (missing values as ``""``) and indexes the frame by those
numbers (``df.attrs["row_label"]`` says whether they are lines or rows, ``df.attrs["source"]`` names the file).
:func:`read_chunks` reads an interactions file of any size in pieces, numbered the same way.
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

from .schema import DataError

CSV_SEPARATORS = {".csv": ",", ".tsv": "\t", ".tab": "\t"}
JSON_SUFFIXES = (".jsonl", ".ndjson", ".json")
PARQUET_SUFFIXES = (".parquet", ".pq")
SUPPORTED_SUFFIXES = (*CSV_SEPARATORS, *PARQUET_SUFFIXES, *JSON_SUFFIXES)
_CSV_FIELD_LIMIT = 2**31 - 1  # the csv module's field limit while reading a shop's file: no limit in practice
ID_COLUMNS = ("user_id", "item_id")

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
    except Exception as e:  # noqa: BLE001 - pyarrow raises several types for a damaged file
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
    return pd.Series([cell_text(v) for v in col], index=col.index, dtype=str)


def cell_text(v: object) -> str:
    """One value of any type as the text a file would hold: missing -> "", whole floats without '.0', lists and
    mappings as JSON."""
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
    df = pd.DataFrame({c: pd.Series([cell_text(rec.get(c)) for rec in records], dtype=str) for c in columns})
    df.index = pd.Index(numbers, name=label)
    return df, label


def read_chunks(path: Path, rows: int) -> Iterator[pd.DataFrame]:
    """An interactions file (CSV/TSV or Parquet) in chunks of about ``rows`` records of raw string columns, each
    indexed by its line (CSV/TSV) or row (Parquet) number, for files too big to read at once."""
    suffix = path.suffix.lower()
    if suffix in PARQUET_SUFFIXES:
        try:
            import pyarrow.parquet as pq
            reader = pq.ParquetFile(path)
        except Exception as err:  # noqa: BLE001 - pyarrow raises several types for a damaged file
            raise DataError(f"{path}: cannot read as Parquet: {err}") from None
        start = 1
        for batch in reader.iter_batches(batch_size=rows):
            frame = batch.to_pandas().astype(str)
            frame.index = pd.RangeIndex(start, start + len(frame))
            start += len(frame)
            frame.attrs["row_label"] = "row"
            yield frame
        return
    if suffix not in CSV_SEPARATORS:
        raise DataError(f"{path}: prepare --shards reads CSV/TSV or Parquet interactions, not {suffix!r}")
    try:
        reader = pd.read_csv(path, sep=CSV_SEPARATORS[suffix], dtype=str, keep_default_na=False,
                             chunksize=rows, encoding="utf-8")
        for frame in reader:
            frame.index = frame.index + 2  # line numbers: the header is line 1
            frame.attrs["row_label"] = "line"
            yield frame
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 ({err})") from None
    except pd.errors.ParserError as err:
        raise DataError(f"{path}: cannot parse as CSV ({err})") from None


__all__ = ["read_table", "read_chunks", "cell_text", "CSV_SEPARATORS", "PARQUET_SUFFIXES", "SUPPORTED_SUFFIXES",
           "ID_COLUMNS"]
