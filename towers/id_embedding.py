"""A string id → embedding with an out-of-vocabulary row, and id dropout while training.

Why it exists: ids seen in training get their own vector; any other id (a new item, a new user, a typo) maps to
the one OOV row instead of failing. Id dropout sends a share of known ids to that OOV row during training, so the
towers learn to lean on text and features, which is all a cold item or a new user has.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf
import tf_keras

from towers.seeded_mask import SeededMask


class IdEmbedding(tf_keras.layers.Layer):
    """ids [...] string → [..., dim]; row 0 is the OOV/unknown id (also "" padding)."""

    def __init__(self, vocabulary: Sequence[str], dim: int, dropout: float = 0.0, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        # StringLookup needs a non-empty vocabulary; "\x00" stands in where there is none (e.g. no brands)
        vocabulary = [v for v in dict.fromkeys(vocabulary) if v != ""] or ["\x00"]
        self.lookup = tf_keras.layers.StringLookup(vocabulary=vocabulary, num_oov_indices=1, mask_token=None,
                                                  name=f"{self.name}_lookup")
        self.embedding = tf_keras.layers.Embedding(len(vocabulary) + 1, dim, name=f"{self.name}_table")
        self.dropout = SeededMask(dropout, seed, name="dropout")

    def call(self, ids: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        index = self.lookup(ids)
        drop = self.dropout(tf.shape(index), training=training)
        return self.embedding(tf.where(drop, tf.zeros_like(index), index))
