"""``twotower prepare --out DIR --shards N``: a shop's interactions as sharded TFRecords, without holding them.

Why it exists: ``train`` reads every interaction into memory to build its examples; a shop whose logs outgrow one
machine cannot. Here the interactions file (CSV/TSV or Parquet) is read in chunks, each chunk validated as
``train`` would (same checks, same dropped-row reasons) and its rows appended to one of many bucket files by a
hash of the user id, so each bucket holds whole users. Then one bucket at a time is sorted, split (leave-last-
out and temporal splits only need a user's own rows) and written: one TFRecord per user with the items of their
training interactions in order (training expands them into (history, target) examples in the graph, so each
interaction is stored once), and that user's validation and test cases. Peak memory is one chunk or one bucket,
whatever the size of the log.

What DIR then holds (the shards, the manifest, the catalogue, the exact logQ frequencies, the user vocabulary,
the evaluation cases) is the ``prepared`` format, laid out by :mod:`ingest.formats.prepared`. Train from it with
``data: {format: prepared, path: DIR}``.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import tensorflow as tf
from tqdm import tqdm

from ingest.formats import prepared as layout
from ingest.formats.generated import read_world
from ingest.normalize import TimestampReader, normalize_interactions, normalize_items, normalize_users
from ingest.read import PARQUET_SUFFIXES, read_chunks, read_table
from ingest.schema import REQUIRED_COLUMNS, DataError, Dataset, DropReport
from ingest.split import assign_split
from training.config import ConfigError
from training.examples import case_rows
from twotower.layout import rename_new, temporary_sibling

log = logging.getLogger("twotower.shards")
CHUNK_ROWS = 500_000       # interactions validated at a time
BUCKET_ROWS = 250_000      # interactions per bucket (about), so one bucket is sorted in memory at a time


def _sources(data: dict) -> tuple[dict, dict]:
    """The files and split a data block names (formats ``files`` and ``generated``)."""
    fmt = data.get("format", "files")
    if fmt == "generated":
        return read_world(Path(data["path"] or ""))
    if fmt != "files":
        raise DataError(f"prepare --shards reads data.format 'files' or 'generated', not {fmt!r}")
    split = dict(data["split"])
    if split.get("type") not in ("leave_last_out", "temporal"):
        raise DataError(f"prepare --shards needs data.split type leave_last_out or temporal (a user's own rows "
                        f"decide them), not {split.get('type')!r}")
    return ({k: Path(data[k]) for k in ("items", "interactions", "users") if data.get(k)}, split)


def _estimated_rows(path: Path) -> int:
    if path.suffix.lower() in PARQUET_SUFFIXES:
        return pq.ParquetFile(path).metadata.num_rows
    return max(1, path.stat().st_size // 40)  # about 40 bytes a CSV line


class _Buckets:
    """Interactions appended to ``count`` Parquet files by a hash of the user id (so a bucket holds whole users)."""

    def __init__(self, directory: Path, count: int):
        self.directory, self.count = directory, count
        self.writers: dict[int, pq.ParquetWriter] = {}
        self.schema = pa.schema([("user_id", pa.string()), ("item", pa.int32()), ("timestamp", pa.int64()),
                                 ("weight", pa.float32()), ("order", pa.int64())])

    def add(self, frame: pd.DataFrame) -> None:
        bucket = pd.util.hash_array(frame["user_id"].to_numpy(object), categorize=True) % np.uint64(self.count)
        for index in np.unique(bucket):
            part = frame[bucket == index]
            if int(index) not in self.writers:
                self.writers[int(index)] = pq.ParquetWriter(self.directory / f"bucket-{index:05d}.parquet",
                                                            self.schema)
            self.writers[int(index)].write_table(pa.Table.from_pandas(part, schema=self.schema,
                                                                      preserve_index=False))

    def close(self) -> list[Path]:
        for writer in self.writers.values():
            writer.close()
        return [self.directory / f"bucket-{index:05d}.parquet" for index in sorted(self.writers)]


def write_shards(config: dict, out: str | os.PathLike, shards: int, progress: bool = True) -> dict:
    """Converts ``config``'s data into ``shards`` TFRecord files under ``out`` (see the module docstring).

    Written into a temporary sibling and renamed at the end: a failure leaves no half-written ``out``.
    """
    if isinstance(shards, bool) or not isinstance(shards, int) or shards < 1:
        raise ConfigError(f"--shards must be a positive integer, got {shards!r}")
    out = Path(out)
    if out.exists():
        raise ConfigError(f"{out} already exists; prepare into a new directory")
    data = config["data"]
    files, split = _sources(data)
    on_bad_rows = data["on_bad_rows"]
    report = DropReport()
    items = normalize_items(read_table(files["items"], required=REQUIRED_COLUMNS["items"], kind="items"),
                            str(files["items"]), report, on_bad_rows)
    users = None
    if "users" in files:
        users = normalize_users(read_table(files["users"], required=REQUIRED_COLUMNS["users"], kind="users"),
                                str(files["users"]), report, on_bad_rows)
    tmp = temporary_sibling(out)   # unique: a concurrent prepare into the same --out keeps its own
    (tmp / "buckets").mkdir(parents=True)
    try:
        summary = _convert(files["interactions"], items, users, split, config, tmp, shards, report, progress)
        shutil.rmtree(tmp / "buckets")
        try:
            rename_new(tmp, out)
        except FileExistsError:   # another writer filled --out meanwhile: keep theirs, write nothing
            raise ConfigError(f"{out} was created by another writer while this prepare ran; nothing written") \
                from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return summary


def _convert(path: Path, items: pd.DataFrame, users: pd.DataFrame | None, split: dict, config: dict, tmp: Path,
             shards: int, report: DropReport, progress: bool) -> dict:
    bucket_files = _bucket_interactions(path, items, config["data"]["on_bad_rows"], tmp / "buckets", shards,
                                        report, progress, config["data"]["timestamp_unit"])
    names = [layout.shard_name(s, shards) for s in range(shards)]
    totals = {"counts": np.zeros(len(items), np.int64), "examples": np.zeros(shards, np.int64),
              "users": np.zeros(shards, np.int64), "split": {"train": 0, "valid": 0, "test": 0},
              "cases": {"valid": 0, "test": 0}, "train_users": []}
    history_len = config["model"]["history_len"]
    novel_only = config["data"]["split"]["type"] == "temporal"  # as training._cases decides it
    writers = [tf.io.TFRecordWriter(str(tmp / name)) for name in names]
    case_writers = {name: pq.ParquetWriter(tmp / layout.cases_name(name), layout.CASE_SCHEMA)
                    for name in layout.CASE_SPLITS}
    quiet = [logging.getLogger(name) for name in ("twotower.data", "twotower.examples")]  # per-bucket chatter
    levels = [logger.level for logger in quiet]
    for logger in quiet:
        logger.setLevel(logging.WARNING)
    try:
        for index, bucket_file in enumerate(tqdm(bucket_files, desc="writing", disable=not progress)):
            frame = pq.read_table(bucket_file).to_pandas()
            _write_bucket(frame, items, split, writers[index % shards], index % shards, case_writers, history_len,
                          novel_only, totals)
            bucket_file.unlink()
    finally:
        for logger, level in zip(quiet, levels):
            logger.setLevel(level)
        for writer in [*writers, *case_writers.values()]:
            writer.close()
    vocabulary = np.sort(np.concatenate(totals["train_users"])) if totals["train_users"] else []
    manifest = {"version": layout.MANIFEST_VERSION, "history_len": history_len, "split": split,
                "interactions": totals["split"], "dropped": report.as_dict(),
                "examples": int(totals["examples"].sum()),
                "shards": [{"file": n, "examples": int(e), "users": int(u)}
                           for n, e, u in zip(names, totals["examples"], totals["users"])],
                "items": len(items), "users": None if users is None else len(users),
                "train_users": len(vocabulary), **{f"{k}_cases": v for k, v in totals["cases"].items()}}
    layout.write_tables(tmp, manifest, items, users, totals["counts"], vocabulary)
    log.info("prepared %d training examples in %d shard(s) (%s)", manifest["examples"], shards, totals["split"])
    return {**manifest, "shards": shards}


def _bucket_interactions(path: Path, items: pd.DataFrame, on_bad_rows: str, directory: Path, shards: int,
                         report: DropReport, progress: bool, timestamp_unit: str = "auto") -> list[Path]:
    """Pass 1: validate the interactions chunk by chunk and append them to bucket files by user (one timestamp
    reader for the whole file: under ``auto`` every chunk is held to the unit of the file's first number)."""
    timestamps = TimestampReader(timestamp_unit, str(path))
    estimate = _estimated_rows(path)
    buckets = _Buckets(directory, shards * max(1, -(-estimate // (BUCKET_ROWS * shards))))
    catalog = pd.Index(items["item_id"].to_numpy(object))
    seen = 0
    with tqdm(total=estimate, unit="row", desc="bucketing", disable=not progress) as bar:
        for chunk in read_chunks(path, CHUNK_ROWS):
            rows = normalize_interactions(chunk, items, str(path), report, on_bad_rows, timestamps) \
                if len(chunk) else chunk
            if len(rows):
                buckets.add(pd.DataFrame({"user_id": rows["user_id"].to_numpy(object),
                                          "item": catalog.get_indexer(rows["item_id"]).astype(np.int32),
                                          "timestamp": rows["timestamp"].to_numpy(np.int64),
                                          "weight": rows["weight"].to_numpy(np.float32),
                                          "order": np.arange(seen, seen + len(rows), dtype=np.int64)}))
            seen += len(rows)
            bar.update(len(chunk))
    bucket_files = buckets.close()
    if not bucket_files:
        raise DataError(f"{path}: no interactions left after validation ({report.as_dict()})")
    return bucket_files


def _write_bucket(frame: pd.DataFrame, items: pd.DataFrame, split: dict, writer: tf.io.TFRecordWriter,
                  shard: int, case_writers: dict, history_len: int, novel_only: bool, totals: dict) -> None:
    """Pass 2, one bucket (whole users): sort, split, one record per user's training items, the cases."""
    user_codes, _ = pd.factorize(frame["user_id"], sort=True)   # integers sort much faster than strings
    order = np.lexsort((frame["order"].to_numpy(), frame["timestamp"].to_numpy(), user_codes))
    frame = frame.iloc[order].reset_index(drop=True)
    frame["item_id"] = items["item_id"].to_numpy(object)[frame["item"].to_numpy()]
    labels = assign_split(Dataset(items=items, interactions=frame), split).to_numpy()
    for name in totals["split"]:
        totals["split"][name] += int((labels == name).sum())
    user_ids, codes = frame["user_id"].to_numpy(object), frame["item"].to_numpy(np.int64)
    user = np.cumsum(np.r_[False, user_ids[1:] != user_ids[:-1]])   # 0, 0, 1, ...: users are contiguous
    train = labels == "train"
    totals["counts"] += np.bincount(codes[train], minlength=len(items))
    rows, weights = np.flatnonzero(train), frame["weight"].to_numpy(np.float32)
    bounds = np.flatnonzero(np.r_[True, user[rows][1:] != user[rows][:-1], True]) if len(rows) else np.zeros(1, int)
    for first, last in zip(bounds[:-1], bounds[1:]):
        span = rows[first:last]
        writer.write(layout.encode_user_record(user_ids[span[0]], codes[span] + 1, weights[span]))
    starts = rows[bounds[:-1]]
    totals["examples"][shard] += len(rows)
    totals["users"][shard] += len(starts)
    totals["train_users"].append(user_ids[starts])
    for name, case_writer in case_writers.items():
        found = case_rows(user, codes, labels, name, history_len, novel_only)
        case_writer.write_table(pa.table({
            "user_id": pa.array(user_ids[found.row], pa.string()),
            "history": pa.FixedSizeListArray.from_arrays(pa.array(found.history.ravel()), history_len).cast(
                pa.list_(pa.int32())),
            "target": pa.array(codes[found.row].astype(np.int32)),
            "exclude": pa.ListArray.from_arrays(pa.array(found.exclude_offsets.astype(np.int32)),
                                                pa.array(found.exclude.astype(np.int32))),
            "new_user": pa.array(found.new_user)}, schema=layout.CASE_SCHEMA))
        totals["cases"][name] += len(found.row)
