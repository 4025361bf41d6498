"""Diversity re-ranking in the graph: maximal marginal relevance with an optional cap per category.

Why it exists: the top-K of a two-tower model is often K near-copies of one item (the same tent in five colours).
Maximal marginal relevance (Carbonell & Goldstein, SIGIR 1998) picks the K items one at a time, each maximising

    (1 - diversity) * relevance(item) - diversity * max similarity(item, items already picked)

over a candidate pool larger than K, so ``diversity`` = 0 is the plain ranking and 1 ignores relevance after the
first pick. Similarity is the dot product of the items' unit item-tower vectors, on the same scale as relevance
(the query-item dot product). ``max_per_category`` > 0 additionally never picks more than that many items of one
category. Both are per request row, so rows with different settings still run as one batch.
"""

from __future__ import annotations

import tensorflow as tf


def rerank(relevance: tf.Tensor, vectors: tf.Tensor, groups: tf.Tensor, diversity: tf.Tensor,
           max_per_group: tf.Tensor, k: int) -> tuple[tf.Tensor, tf.Tensor]:
    """relevance [B, C] (-inf: not allowed), vectors [B, C, D], groups [B, C] int32 in [0, G), diversity [B] in
    [0, 1], max_per_group [B] int32 (0 = no cap) → (positions [B, k] into C, in pick order; valid [B, k], false
    where fewer than k candidates could be picked)."""
    relevance = tf.convert_to_tensor(relevance)
    batch, pool = tf.shape(relevance)[0], tf.shape(relevance)[1]
    weight = tf.clip_by_value(tf.cast(diversity, tf.float32), 0.0, 1.0)[:, None]
    cap = tf.cast(max_per_group, tf.int32)[:, None]
    members = tf.one_hot(groups, tf.reduce_max(groups) + 1, dtype=tf.int32)          # [B, C, G]
    allowed = tf.math.is_finite(relevance)
    neg_inf = tf.fill([batch, pool], float("-inf"))

    def step(i, taken, closest, counts, positions, valid):
        in_full_group = tf.reduce_sum(members * counts[:, None, :], axis=2) >= cap   # [B, C]
        eligible = allowed & ~taken & ~((cap > 0) & in_full_group)
        score = (1.0 - weight) * relevance - weight * tf.where(tf.math.is_finite(closest), closest, 0.0)
        pick = tf.argmax(tf.where(eligible, score, neg_inf), axis=1, output_type=tf.int32)
        ok = tf.reduce_any(eligible, axis=1)
        chosen = tf.equal(tf.range(pool)[None, :], pick[:, None]) & ok[:, None]
        picked = tf.gather(vectors, pick, batch_dims=1)                                # [B, D]
        similarity = tf.reduce_sum(vectors * picked[:, None, :], axis=-1)             # [B, C]
        closest = tf.maximum(closest, tf.where(ok[:, None], similarity, neg_inf))
        counts += tf.reduce_sum(members * tf.cast(chosen, tf.int32)[:, :, None], axis=1)
        rank2 = [None, None]
        return (i + 1, tf.ensure_shape(taken | chosen, rank2), tf.ensure_shape(closest, rank2),
                tf.ensure_shape(counts, rank2), positions.write(i, pick), valid.write(i, ok))

    start = (tf.constant(0), tf.zeros([batch, pool], tf.bool), neg_inf, tf.zeros_like(members[:, 0, :]),
             tf.TensorArray(tf.int32, size=k), tf.TensorArray(tf.bool, size=k))
    _, _, _, _, positions, valid = tf.while_loop(lambda i, *_: i < k, step, start)
    return tf.transpose(positions.stack()), tf.transpose(valid.stack())


def group_ids(labels: tf.Tensor) -> tf.Tensor:
    """String labels of any shape → int32 ids of the same shape (equal labels, equal ids), for ``rerank``."""
    unique, index = tf.unique(tf.reshape(labels, [-1]), out_idx=tf.int32)
    return tf.reshape(index, tf.shape(labels))
