"""Random masks for training-time feature dropout that a resumed run draws again exactly.

Why it exists: stateful random ops start over after a restart, so a run resumed from a checkpoint would drop
different features than the run that was never interrupted. Here each mask comes from a stateless generator
keyed by (seed, number of training calls so far), and that counter is a variable saved in the checkpoint.
"""

from __future__ import annotations

import tensorflow as tf
import tf_keras


class SeededMask(tf_keras.layers.Layer):
    """shape → bool mask, True with probability ``rate``; all False outside training or at rate 0."""

    def __init__(self, rate: float, seed: int, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"{self.name}: dropout rate must be in [0, 1), got {rate}")
        self.rate = float(rate)
        self.seed = int(seed)
        # Every replica of a multi-worker step counts the same calls; the first replica's counter is kept.
        self.calls = tf.Variable(0, dtype=tf.int64, trainable=False, name="calls",
                                 aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)

    def call(self, shape: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        if not training or self.rate == 0.0:
            return tf.zeros(shape, tf.bool)
        # Each replica draws its own mask: call c of replica r of R uses stream c·R + r (one process: c).
        context = tf.distribute.get_replica_context()
        replicas = 1 if context is None else context.num_replicas_in_sync
        replica = 0 if context is None or replicas == 1 else tf.cast(context.replica_id_in_sync_group, tf.int64)
        stream = self.calls.assign_add(1) * replicas + replica
        seed = tf.stack([tf.constant(self.seed, tf.int64), stream])
        return tf.random.stateless_uniform(shape, seed=seed) < self.rate


class SeededDropout(tf_keras.layers.Layer):
    """Inverted dropout whose masks come from :class:`SeededMask`, so a resumed run drops the same units."""

    def __init__(self, rate: float, seed: int, **kwargs):
        super().__init__(**kwargs)
        self.mask = SeededMask(rate, seed, name="mask")

    def call(self, inputs: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        if not training or self.mask.rate == 0.0:
            return inputs
        dropped = self.mask(tf.shape(inputs), training=training)
        return tf.where(dropped, tf.zeros_like(inputs), inputs / (1.0 - self.mask.rate))
