"""A causal Transformer over a user's history items: one summary per prefix, for next-item training at every step.

Why it exists: the best sequential recommenders (SASRec, gSASRec, eSASRec) train a causal encoder on every position
of every sequence at once: the output after item t is asked for item t + 1, so one pass over a user's sequence
teaches as many next-item predictions as the sequence is long, where the `attention` encoder sees one prefix per
example. It is ``HistoryAttention``'s blocks (ReZero-gated, seeded dropout) with two changes: a query attends only
to itself and earlier real items, and the learned position embedding counts real items from the start of the
window (0 = the oldest), so a prefix is encoded the same way whether it ends a training window or a served history.
The user tower takes its ``change`` (what the blocks added to the latest item) as a correction to the prefix's
recency-weighted mean, so that an untrained encoder is the `mean` tower.
"""

from __future__ import annotations

import tensorflow as tf

from towers.history_attention import HistoryAttention


class CausalHistory(HistoryAttention):
    """vectors [B, H, D] (oldest first), mask [B, H] bool → [B, H, D]: at each position t, the summary of the real
    items at positions ≤ t, read out at the latest real one (zeros where there is none yet). Its last row is the
    whole history's summary, what a served request gets."""

    def positions(self, mask: tf.Tensor) -> tf.Tensor:
        return tf.cumsum(tf.cast(mask, tf.int32), axis=1, exclusive=True)

    def attends(self, mask: tf.Tensor) -> tf.Tensor:
        length = tf.shape(mask)[1]
        earlier = tf.linalg.band_part(tf.ones([length, length], tf.bool), -1, 0)   # key ≤ query
        return earlier[None] & mask[:, None, :]

    def call(self, vectors: tf.Tensor, mask: tf.Tensor, training: bool | None = None,
             change: bool = False) -> tf.Tensor:
        """``change``: instead of the stream at the latest real item, what the position embedding and the blocks
        added to that item's vector there (the user tower adds it to the prefix's recency-weighted mean)."""
        x = self.encode(vectors, mask, training=training)
        x = x - vectors if change else x
        length = tf.shape(vectors)[1]
        # the latest real position at or before each t: a query on padding or an unknown item reads the prefix so far
        latest = tf.reduce_max(tf.where(self.attends(mask), tf.range(length)[None, None, :], -1), axis=2)  # [B, H]
        out = tf.gather(x, tf.maximum(latest, 0), batch_dims=1)
        return tf.where((latest >= 0)[:, :, None], out, tf.zeros_like(out))
