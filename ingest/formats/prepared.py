"""Format ``prepared``: the on-disk layout of a ``twotower prepare --shards N`` directory.

Why it exists: the shards are written by ``training.shard_writer`` and streamed by ``training.shard_reader``;
both go through this module, the one place that names the files, the manifest and its version, the record
and evaluation-case schemas. What the files mean for training (examples, cases) stays in training/.

DIR holds ``train-SSSSS-of-NNNNN.tfrecord`` (one record per user: ``user_id``, ``items`` = catalogue row + 1 of
their training interactions in order, ``weights``), ``manifest.json`` (examples per shard, the split, the
counts), ``items.parquet`` and ``users.parquet`` (the validated catalogue and users), ``item_counts.npy``
(training interactions per catalogue row), ``train_users.txt`` (the user-id vocabulary) and ``valid.parquet`` /
``test.parquet`` (evaluation cases, :data:`CASE_SCHEMA`). Train from it with ``data: {format: prepared, path: DIR}``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ..schema import DataError, Dataset

MANIFEST_VERSION = 1
MANIFEST = "manifest.json"
ITEMS = "items.parquet"
USERS = "users.parquet"
ITEM_COUNTS = "item_counts.npy"
TRAIN_USERS = "train_users.txt"
CASE_SPLITS = ("valid", "test")
CASE_SCHEMA = pa.schema([("user_id", pa.string()), ("history", pa.list_(pa.int32())), ("target", pa.int32()),
                         ("exclude", pa.list_(pa.int32())), ("new_user", pa.bool_())])


def shard_name(shard: int, shards: int) -> str:
    return f"train-{shard:05d}-of-{shards:05d}.tfrecord"


def cases_name(split: str) -> str:
    return f"{split}.parquet"


def encode_user_record(user: str, items: np.ndarray, weights: np.ndarray) -> bytes:
    """One user's training items (catalogue row + 1, in order) and their weights as a serialised tf.Example."""
    import tensorflow as tf

    feature = tf.train.Feature
    return tf.train.Example(features=tf.train.Features(feature={
        "user_id": feature(bytes_list=tf.train.BytesList(value=[user.encode("utf-8")])),
        "items": feature(int64_list=tf.train.Int64List(value=items.tolist())),
        "weights": feature(float_list=tf.train.FloatList(value=weights.tolist())),
    })).SerializeToString()


def user_record_features() -> dict:
    """The parsing spec of :func:`encode_user_record`'s records (for ``tf.io.parse_single_example``)."""
    import tensorflow as tf

    return {"user_id": tf.io.FixedLenFeature([], tf.string),
            "items": tf.io.VarLenFeature(tf.int64), "weights": tf.io.VarLenFeature(tf.float32)}


def write_tables(directory: Path, manifest: dict, items: pd.DataFrame, users: pd.DataFrame | None,
                 item_counts: np.ndarray, train_users) -> None:
    """The small files beside the shards (the shards and case files are written as they are made); ``manifest``
    starts with ``"version": MANIFEST_VERSION``."""
    items.to_parquet(directory / ITEMS, index=False)
    if users is not None:
        users.to_parquet(directory / USERS, index=False)
    np.save(directory / ITEM_COUNTS, item_counts.astype(np.float64))
    (directory / TRAIN_USERS).write_text("".join(f"{u}\n" for u in train_users), encoding="utf-8")
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str) + "\n", encoding="utf-8")


class PreparedDirectory:
    """A ``twotower prepare`` directory, its manifest checked against the model's ``history_len``."""

    def __init__(self, directory: str | Path, history_len: int):
        self.directory = Path(directory)
        manifest = self.directory / MANIFEST
        if not manifest.is_file():
            raise DataError(f"{manifest}: not found; data.path must be a directory written by `twotower prepare`")
        self.manifest = json.loads(manifest.read_text(encoding="utf-8"))
        if self.manifest.get("version") != MANIFEST_VERSION:
            raise DataError(f"{manifest}: version {self.manifest.get('version')} is not {MANIFEST_VERSION}; "
                            f"prepare the data again")
        if self.manifest["history_len"] != history_len:
            raise DataError(f"{manifest}: prepared with history_len {self.manifest['history_len']}, but "
                            f"model.history_len is {history_len}; prepare again or set it to match")
        self.items = pd.read_parquet(self.directory / ITEMS)
        users = self.directory / USERS
        self.users = pd.read_parquet(users) if users.exists() else None

    def catalogue(self) -> Dataset:
        """The catalogue and users as a Dataset, with no interactions: those stay in the shards."""
        empty = pd.DataFrame({"user_id": pd.Series([], dtype=str), "item_id": pd.Series([], dtype=str),
                              "timestamp": pd.Series([], dtype=np.int64), "event": pd.Series([], dtype=str),
                              "weight": pd.Series([], dtype=float)})
        return Dataset(items=self.items, interactions=empty, users=self.users, name=str(self.directory))

    def item_counts(self) -> np.ndarray:
        return np.load(self.directory / ITEM_COUNTS)

    def train_users(self) -> list[str]:
        return (self.directory / TRAIN_USERS).read_text(encoding="utf-8").splitlines()

    def cases(self, split: str) -> pa.Table:
        return pq.read_table(self.directory / cases_name(split))

    def shard_files(self) -> list[dict]:
        """The manifest's shards: ``file`` (a path under the directory), ``examples``, ``users``."""
        return [{**shard, "file": str(self.directory / shard["file"])} for shard in self.manifest["shards"]]


__all__ = ["PreparedDirectory", "MANIFEST_VERSION", "CASE_SCHEMA", "CASE_SPLITS", "shard_name", "cases_name",
           "encode_user_record", "user_record_features", "write_tables"]
