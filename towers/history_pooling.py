"""Recency-weighted mean of a user's history item vectors, with padding and unknown items masked out.

Why it exists: the user tower has to summarise a variable-length history (most recent last) into one vector;
an exponential recency weight lets recent items count more, and an empty history yields zeros, not NaN. The
`causal` history encoder trains on every prefix of a sequence at once; ``prefixes`` gives each prefix's summary.
"""

from __future__ import annotations

import tensorflow as tf
import tf_keras


class HistoryPooling(tf_keras.layers.Layer):
    """vectors [B, H, D], mask [B, H] bool → ([B, D] weighted mean, [B, 1] log(1 + number of items))."""

    def __init__(self, decay: float = 0.9, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 < decay <= 1.0:
            raise ValueError(f"model.history_decay must be in (0, 1], got {decay}")
        self.decay = float(decay)

    def call(self, vectors: tf.Tensor, mask: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        length = tf.shape(vectors)[1]
        age = tf.cast(tf.range(length - 1, -1, -1), tf.float32)  # 0 for the most recent (last) position
        weights = tf.pow(self.decay, age)[None, :] * tf.cast(mask, tf.float32)
        total = tf.reduce_sum(weights, axis=1, keepdims=True)
        pooled = tf.reduce_sum(vectors * weights[:, :, None], axis=1) / tf.maximum(total, 1e-9)
        count = tf.math.log1p(tf.reduce_sum(tf.cast(mask, tf.float32), axis=1, keepdims=True))
        return pooled, count

    def prefixes(self, vectors: tf.Tensor, mask: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """vectors [B, H, D], mask [B, H] → ([B, H, D], [B, H, 1]): at each position t, what ``call`` gives for
        the history up to and including t."""
        length = tf.shape(vectors)[1]
        step = tf.range(length)
        age = tf.cast(step[:, None] - step[None, :], tf.float32)                     # [query t, item j]: t - j
        weights = tf.where(age >= 0, tf.pow(self.decay, tf.maximum(age, 0.0)), 0.0)[None] * \
            tf.cast(mask, tf.float32)[:, None, :]                                     # [B, t, j]
        total = tf.reduce_sum(weights, axis=2, keepdims=True)
        pooled = tf.matmul(weights, vectors) / tf.maximum(total, 1e-9)
        count = tf.math.log1p(tf.cumsum(tf.cast(mask, tf.float32), axis=1))[:, :, None]
        return pooled, count
