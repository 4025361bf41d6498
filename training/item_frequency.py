"""Streaming item-frequency estimation for the logQ correction (Yi et al., RecSys 2019, "Sampling-bias-corrected
neural modeling for large corpus item recommendations", algorithms 2 and 3).

Why it exists: logQ subtracts the log of how often each candidate turns up in a batch. Counting that exactly
needs a full pass over the interactions before training starts, which a stream of shards (or a log that keeps
growing) does not allow. Yi et al. estimate it while training: per hashed id, the step it was last seen
(``last_step``) and a moving average of the gap between sightings (``gap``); ``1 / gap`` is how often it turns up
per step. Several hash functions each keep their own arrays and the largest gap wins, since a collision can only
make a bucket's gap look shorter.

Two extensions. The first sighting sets the gap to the steps since the start (the paper's ``A = 0`` start, without
mixing in an arbitrary initial gap, which would bias rare ids for a long time). And in-batch logQ needs the
expected number of occurrences per batch, not only the chance of turning up at least once, which saturates at 1
for popular ids: a third array keeps the moving average of the count at each sighting, and the estimate is
``count / gap`` (for ids seen once per sighting, the paper's ``1 / gap``). Collisions inside one batch are merged
per bucket first, so the update is deterministic and the same on every replica that sees the same (gathered)
batch.
"""

from __future__ import annotations

import tensorflow as tf
import tf_keras


class StreamingItemFrequency(tf_keras.layers.Layer):
    """ids [n] (string or integer) → expected occurrences per step [n]; ``update`` feeds one step's ids."""

    def __init__(self, buckets: int = 1 << 20, num_hashes: int = 2, learning_rate: float = 0.05,
                 initial_gap: float = 1000.0, **kwargs):
        super().__init__(**kwargs)
        if buckets < 1 or num_hashes < 1:
            raise ValueError(f"{self.name}: buckets and num_hashes must be positive")
        if not 0.0 < learning_rate <= 1.0:
            raise ValueError(f"{self.name}: learning_rate must be in (0, 1], got {learning_rate}")
        self.buckets, self.num_hashes = int(buckets), int(num_hashes)
        self.learning_rate, self.initial_gap = float(learning_rate), float(initial_gap)
        # Every replica computes the same update from the same gathered ids: the first replica's value is kept.
        first = dict(trainable=False, aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
        self.step = tf.Variable(0, dtype=tf.int64, name="step", **first)
        self.last_step = tf.Variable(tf.zeros([self.num_hashes, self.buckets], tf.int64), name="last_step", **first)
        self.gap = tf.Variable(tf.fill([self.num_hashes, self.buckets], self.initial_gap), name="gap", **first)
        self.count = tf.Variable(tf.ones([self.num_hashes, self.buckets]), name="count", **first)

    def _hashes(self, ids: tf.Tensor) -> tf.Tensor:
        """[num_hashes, n] bucket indices, one independent keyed hash per row."""
        ids = tf.reshape(ids, [-1])
        if ids.dtype != tf.string:
            ids = tf.strings.as_string(ids)
        return tf.stack([tf.strings.to_hash_bucket_strong(ids, self.buckets, key=[k + 1, 7919 * (k + 1)])
                         for k in range(self.num_hashes)])

    def update(self, ids: tf.Tensor) -> tf.Tensor:
        """Records one step in which ``ids`` were seen (repeats count); returns the new step number."""
        step = self.step.assign_add(1)
        rate = tf.constant(self.learning_rate, tf.float32)
        indices, updates = [], {"last_step": [], "gap": [], "count": []}
        for k, buckets in enumerate(tf.unstack(self._hashes(ids), num=self.num_hashes)):
            unique, _, counts = tf.unique_with_counts(buckets)
            seen = tf.gather(self.last_step[k], unique) > 0
            observed_gap = tf.cast(step - tf.gather(self.last_step[k], unique), tf.float32)
            observed_count = tf.cast(counts, tf.float32)
            moving = lambda old, new, seen=seen: tf.where(seen, (1.0 - rate) * old + rate * new, new)
            indices.append(tf.stack([tf.fill(tf.shape(unique), tf.cast(k, tf.int64)), unique], axis=1))
            updates["last_step"].append(tf.fill(tf.shape(unique), step))
            updates["gap"].append(moving(tf.gather(self.gap[k], unique), observed_gap))
            updates["count"].append(moving(tf.gather(self.count[k], unique), observed_count))
        index = tf.concat(indices, axis=0)
        for name, values in updates.items():
            variable = getattr(self, name)
            variable.assign(tf.tensor_scatter_nd_update(variable, index, tf.concat(values, axis=0)))
        return step

    def call(self, ids: tf.Tensor) -> tf.Tensor:
        """Expected occurrences of each id per step: count / gap of the hash function with the largest gap."""
        hashes = self._hashes(ids)
        gaps = tf.stack([tf.gather(self.gap[k], hashes[k]) for k in range(self.num_hashes)])
        counts = tf.stack([tf.gather(self.count[k], hashes[k]) for k in range(self.num_hashes)])
        widest = tf.argmax(gaps, axis=0, output_type=tf.int32)
        pick = lambda table: tf.gather(tf.transpose(table), widest, batch_dims=1)
        return tf.reshape(pick(counts) / tf.maximum(pick(gaps), 1e-6), tf.shape(ids))
