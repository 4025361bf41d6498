"""Training from ``twotower prepare`` shards: examples streamed with ``tf.data``, each worker on its own files.

Why it exists: the in-memory path builds every (history, target) example up front. From shards, the examples are
made in the input pipeline: each record is one user's training items in order, and ``tf.signal.frame`` turns it
into that user's examples (each history is the previous ``history_len`` items, as ``training_examples`` builds
them). Each worker reads only its share of the files (shard i goes to worker i mod N), so no process ever holds
the interactions, and the manifest's per-shard counts give every worker the same number of steps per epoch.
Evaluation cases, vocabularies and frequencies come from the small files ``prepare`` wrote beside the shards
(the ``prepared`` format, :mod:`ingest.formats.prepared`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf

from ingest.formats.prepared import PreparedDirectory, user_record_features
from ingest.schema import Dataset
from towers.item_tower import price_statistics
from training.artifacts import Artifacts, tables
from training.config import ConfigError
from training.examples import Examples

USER_SHUFFLE = 2_048     # users (records) shuffled before they are expanded into examples
EXAMPLE_SHUFFLE = 16_384  # examples shuffled after


class ShardStream:
    """A ``prepare --shards`` directory, opened for training and evaluation."""

    def __init__(self, directory: str | Path, history_len: int):
        self.prepared = PreparedDirectory(directory, history_len)
        self.directory, self.manifest = self.prepared.directory, self.prepared.manifest
        self.history_len = history_len
        self.items, self.users = self.prepared.items, self.prepared.users

    @property
    def examples(self) -> int:
        return int(self.manifest["examples"])

    def dataset_view(self) -> Dataset:
        """The catalogue and users as a Dataset, with no interactions: those stay in the shards."""
        return self.prepared.catalogue()

    def artifacts(self, item_text_columns: list[str], user_text_columns: list[str]) -> Artifacts:
        counts = self.prepared.item_counts()
        catalog, users = tables(self.items, self.users, item_text_columns, user_text_columns)
        train_users = self.prepared.train_users()
        return Artifacts(catalog=catalog, users=users, item_counts=counts,
                         train_item_ids=sorted(catalog["item_id"].to_numpy()[counts > 0].astype(str)),
                         train_user_ids=train_users, price_stats=price_statistics(catalog["price"].to_numpy()),
                         encoder={})

    def cases(self, split: str) -> Examples:
        """The split's evaluation cases; targets never in a training interaction are the cold items."""
        table = self.prepared.cases(split)
        ids = np.array(["", *self.items["item_id"].astype(str)], dtype=object)   # catalogue row + 1 → id
        history = table["history"].combine_chunks().flatten().to_numpy(zero_copy_only=False)
        exclude = table["exclude"].combine_chunks()
        offsets = exclude.offsets.to_numpy()
        excluded = ids[exclude.values.to_numpy(zero_copy_only=False) + 1]
        target = table["target"].to_numpy()
        counts = self.prepared.item_counts()
        return Examples(table["user_id"].to_numpy(zero_copy_only=False).astype(object),
                        ids[history].reshape(-1, self.history_len), ids[target + 1],
                        np.ones(len(target), np.float32),
                        [excluded[offsets[i]:offsets[i + 1]] for i in range(len(target))],
                        counts[target] == 0, table["new_user"].to_numpy(zero_copy_only=False).astype(bool))

    def files(self, workers: int = 1, worker: int = 0) -> list[str]:
        """This worker's shard files: every ``workers``-th, from its index."""
        shards = self.prepared.shard_files()
        if len(shards) < workers:
            raise ConfigError(f"{self.directory}: {len(shards)} shard(s) for {workers} workers; prepare with "
                             f"--shards {workers} or more")
        return [s["file"] for s in shards[worker::workers]]

    def steps_per_epoch(self, batch_size: int, workers: int = 1) -> int:
        """Full batches every worker has (single process: every batch, the last one partial)."""
        if workers == 1:
            return -(-self.examples // batch_size)
        shards = self.manifest["shards"]
        return min(sum(s["examples"] for s in shards[w::workers]) // batch_size for w in range(workers))

    def dataset(self, batch_size: int, seed: int, epoch: int, workers: int = 1, worker: int = 0) -> tf.data.Dataset:
        """This worker's examples for one epoch, shuffled by (seed, epoch), in batches of ``batch_size``."""
        item_ids = tf.constant(["", *self.items["item_id"].astype(str).tolist()])
        history_len = self.history_len
        schema = user_record_features()

        def expand(record: tf.Tensor) -> tf.data.Dataset:
            parsed = tf.io.parse_single_example(record, schema)
            items = tf.sparse.to_dense(parsed["items"])
            padded = tf.concat([tf.zeros([history_len], tf.int64), items], axis=0)
            history = tf.signal.frame(padded[:-1], history_len, 1)  # the items before each position
            return tf.data.Dataset.from_tensor_slices({
                "user_id": tf.fill(tf.shape(items), parsed["user_id"]), "history": tf.gather(item_ids, history),
                "target": tf.gather(item_ids, items), "weight": tf.sparse.to_dense(parsed["weights"])})

        shuffle_seed = int(np.random.default_rng([seed, epoch]).integers(2**31))
        steps = self.steps_per_epoch(batch_size, workers)
        return (tf.data.TFRecordDataset(self.files(workers, worker))
                .shuffle(USER_SHUFFLE, seed=shuffle_seed)
                .flat_map(expand)
                .shuffle(EXAMPLE_SHUFFLE, seed=shuffle_seed + 1)
                .batch(batch_size)
                .take(steps)
                .prefetch(tf.data.AUTOTUNE))
