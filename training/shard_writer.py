"""``twotower prepare --out DIR --shards N``: a shop's interactions as sharded TFRecords, without holding them.

Why it exists: ``train`` reads every interaction into memory to build its examples; a shop whose logs outgrow one
machine cannot. Here the interactions file (CSV/TSV or Parquet) is read in chunks, each chunk validated as
``train`` would (same checks, same dropped-row reasons) and its rows appended to one of many bucket files by a
hash of the user id, so each bucket holds whole users. Then one bucket at a time is sorted, split (leave-last-
out and temporal splits only need a user's own rows) and written: one TFRecord per user with the items of their
training interactions in order (training expands them into (history, target) examples in the graph, so each
interaction is stored once), and that user's validation and test cases. Peak memory is one chunk or one bucket,
whatever the size of the log.

DIR then holds ``train-SSSSS-of-NNNNN.tfrecord``, ``manifest.json`` (examples per shard, the split, the counts),
``items.parquet`` and ``users.parquet`` (the validated catalogue and users), ``item_counts.npy`` (training
interactions per catalogue row: the exact logQ frequencies and the popularity baseline), ``train_users.txt``
(the user-id vocabulary) and ``valid.parquet`` / ``test.parquet`` (evaluation cases). Train from it with
``data: {format: prepared, path: DIR}``.
"""

from __future__ import annotations

import json
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

from ingest.schema import DataError, Dataset, DropReport
from training.config import ConfigError
from ingest.split import assign_split
from ingest.validate import (CSV_SEPARATORS, PARQUET_SUFFIXES, REQUIRED_COLUMNS, TimestampReader,
                             normalize_interactions, normalize_items, normalize_users, read_table)

log = logging.getLogger("twotower.shards")
CHUNK_ROWS = 500_000       # interactions validated at a time
BUCKET_ROWS = 250_000      # interactions per bucket (about), so one bucket is sorted in memory at a time
MANIFEST_VERSION = 1


def _sources(data: dict) -> tuple[dict, dict]:
    """The files and split a data block names (formats ``files`` and ``generated``)."""
    fmt = data.get("format", "files")
    if fmt == "generated":
        directory = Path(data["path"] or "")
        world = directory / "world.json"
        if not world.is_file():
            raise DataError(f"{world}: not found; data.path must be a directory written by twotower generate")
        cutoffs = json.loads(world.read_text(encoding="utf-8"))
        return ({"items": directory / "items.csv", "interactions": directory / "interactions.csv",
                 "users": directory / "users.csv"},
                {"type": "temporal", "valid_start": cutoffs["valid_start"], "test_start": cutoffs["test_start"]})
    if fmt != "files":
        raise DataError(f"prepare --shards reads data.format 'files' or 'generated', not {fmt!r}")
    split = dict(data["split"])
    if split.get("type") not in ("leave_last_out", "temporal"):
        raise DataError(f"prepare --shards needs data.split type leave_last_out or temporal (a user's own rows "
                        f"decide them), not {split.get('type')!r}")
    return ({k: Path(data[k]) for k in ("items", "interactions", "users") if data.get(k)}, split)


def _chunks(path: Path):
    """The interactions file in chunks of raw string columns, each indexed by its line (CSV) or row number."""
    suffix = path.suffix.lower()
    if suffix in PARQUET_SUFFIXES:
        try:
            reader = pq.ParquetFile(path)
        except Exception as err:  # noqa: BLE001 - pyarrow raises several types for a damaged file
            raise DataError(f"{path}: cannot read as Parquet: {err}") from None
        start = 1
        for batch in reader.iter_batches(batch_size=CHUNK_ROWS):
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
                             chunksize=CHUNK_ROWS, encoding="utf-8")
        for frame in reader:
            frame.index = frame.index + 2  # line numbers: the header is line 1
            frame.attrs["row_label"] = "line"
            yield frame
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 ({err})") from None
    except pd.errors.ParserError as err:
        raise DataError(f"{path}: cannot parse as CSV ({err})") from None


CASE_SCHEMA = pa.schema([("user_id", pa.string()), ("history", pa.list_(pa.int32())), ("target", pa.int32()),
                         ("exclude", pa.list_(pa.int32())), ("new_user", pa.bool_())])


def bucket_cases(user: np.ndarray, items: np.ndarray, labels: np.ndarray, split: str, history_len: int,
                 novel_only: bool) -> dict:
    """``training.examples.evaluation_cases`` for whole users at once, vectorised (no loop over users).

    ``user`` numbers each row's user (rows sorted by user, then time), ``items`` holds catalogue rows. Per user
    with a ``split`` row: the first such row (the first whose item is new to the user when ``novel_only``) is the
    target; its history is the previous ``history_len`` items of any split (catalogue row + 1, 0 pads); its
    exclusions are the user's earlier items other than the target. Returns Arrow-ready columns and ``row``, the
    target's row.
    """
    n = len(items)
    start = np.r_[0, np.flatnonzero(user[1:] != user[:-1]) + 1]
    first_row = start[np.searchsorted(start, np.arange(n), side="right") - 1]
    candidate = labels == split
    if novel_only:
        key = user.astype(np.int64) * (int(items.max(initial=0)) + 1) + items
        _, first_sighting = np.unique(key, return_index=True)
        fresh = np.zeros(n, bool)
        fresh[first_sighting] = True
        candidate &= fresh
    rows = np.flatnonzero(candidate)
    rows = rows[np.r_[True, user[rows][1:] != user[rows][:-1]]] if len(rows) else rows
    back = rows[:, None] - np.arange(history_len, 0, -1)[None, :]
    history = np.where(back >= first_row[rows][:, None], items[np.maximum(back, 0)] + 1, 0).astype(np.int32)
    lengths = rows - first_row[rows]
    case = np.repeat(np.arange(len(rows)), lengths)
    earlier = items[np.repeat(first_row[rows], lengths) + np.arange(lengths.sum()) - np.repeat(
        np.cumsum(lengths) - lengths, lengths)] if len(rows) else np.zeros(0, np.int64)
    keep = earlier != items[rows][case]
    width = int(items.max(initial=0)) + 1
    pairs = np.unique(case[keep].astype(np.int64) * width + earlier[keep])   # sorted by case, then item
    offsets = np.searchsorted(pairs // width, np.arange(len(rows) + 1))
    trained = np.zeros(int(user.max(initial=-1)) + 1, bool)
    trained[user[labels == "train"]] = True
    return {"row": rows,
            "history": pa.FixedSizeListArray.from_arrays(pa.array(history.ravel()), history_len).cast(
                pa.list_(pa.int32())),
            "target": pa.array(items[rows].astype(np.int32)),
            "exclude": pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)),
                                                pa.array((pairs % width).astype(np.int32))),
            "new_user": pa.array(~trained[user[rows]])}


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


def _user_record(user: str, items: np.ndarray, weights: np.ndarray) -> bytes:
    feature = tf.train.Feature
    return tf.train.Example(features=tf.train.Features(feature={
        "user_id": feature(bytes_list=tf.train.BytesList(value=[user.encode("utf-8")])),
        "items": feature(int64_list=tf.train.Int64List(value=items.tolist())),
        "weights": feature(float_list=tf.train.FloatList(value=weights.tolist())),
    })).SerializeToString()


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
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "buckets").mkdir(parents=True)
    try:
        summary = _convert(files["interactions"], items, users, split, config, tmp, shards, report, progress)
        shutil.rmtree(tmp / "buckets")
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return summary


def _convert(path: Path, items: pd.DataFrame, users: pd.DataFrame | None, split: dict, config: dict, tmp: Path,
             shards: int, report: DropReport, progress: bool) -> dict:
    bucket_files = _bucket_interactions(path, items, config["data"]["on_bad_rows"], tmp / "buckets", shards,
                                        report, progress, config["data"]["timestamp_unit"])
    names = [f"train-{s:05d}-of-{shards:05d}.tfrecord" for s in range(shards)]
    totals = {"counts": np.zeros(len(items), np.int64), "examples": np.zeros(shards, np.int64),
              "users": np.zeros(shards, np.int64), "split": {"train": 0, "valid": 0, "test": 0},
              "cases": {"valid": 0, "test": 0}, "train_users": []}
    history_len = config["model"]["history_len"]
    novel_only = config["data"]["split"]["type"] == "temporal"  # as training._cases decides it
    writers = [tf.io.TFRecordWriter(str(tmp / name)) for name in names]
    case_writers = {name: pq.ParquetWriter(tmp / f"{name}.parquet", CASE_SCHEMA) for name in ("valid", "test")}
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
    items.to_parquet(tmp / "items.parquet", index=False)
    if users is not None:
        users.to_parquet(tmp / "users.parquet", index=False)
    np.save(tmp / "item_counts.npy", totals["counts"].astype(np.float64))
    vocabulary = np.sort(np.concatenate(totals["train_users"])) if totals["train_users"] else []
    (tmp / "train_users.txt").write_text("".join(f"{u}\n" for u in vocabulary), encoding="utf-8")
    manifest = {"version": MANIFEST_VERSION, "history_len": history_len, "split": split,
                "interactions": totals["split"], "dropped": report.as_dict(),
                "examples": int(totals["examples"].sum()),
                "shards": [{"file": n, "examples": int(e), "users": int(u)}
                           for n, e, u in zip(names, totals["examples"], totals["users"])],
                "items": len(items), "users": None if users is None else len(users),
                "train_users": len(vocabulary), **{f"{k}_cases": v for k, v in totals["cases"].items()}}
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str) + "\n", encoding="utf-8")
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
        for chunk in _chunks(path):
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
        writer.write(_user_record(user_ids[span[0]], codes[span] + 1, weights[span]))
    starts = rows[bounds[:-1]]
    totals["examples"][shard] += len(rows)
    totals["users"][shard] += len(starts)
    totals["train_users"].append(user_ids[starts])
    for name, case_writer in case_writers.items():
        cases = bucket_cases(user, codes, labels, name, history_len, novel_only)
        cases["user_id"] = pa.array(user_ids[cases.pop("row")], pa.string())
        case_writer.write_table(pa.table(cases, schema=CASE_SCHEMA))
        totals["cases"][name] += len(cases["target"])
