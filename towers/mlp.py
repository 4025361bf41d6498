"""The projection head both towers end in: dense layers, then an L2-normalised output.

Why it exists: with unit-length vectors the dot product is a cosine, so the retrieval temperature has a fixed
meaning and a nearest-neighbour index (ScaNN, brute force) ranks by the same score the model was trained on.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf
import tf_keras


class ProjectionHead(tf_keras.layers.Layer):
    """[B, F] → [B, dim], L2-normalised; ``residual`` [B, dim] (optional) is added before normalising."""

    def __init__(self, hidden_units: Sequence[int], dim: int, **kwargs):
        super().__init__(**kwargs)
        self.hidden = [tf_keras.layers.Dense(u, activation="gelu", name=f"hidden_{i}")
                       for i, u in enumerate(hidden_units)]
        self.norm = tf_keras.layers.LayerNormalization(name="norm")
        self.out = tf_keras.layers.Dense(dim, name="out")

    def call(self, inputs: tf.Tensor, residual: tf.Tensor | None = None) -> tf.Tensor:
        x = self.norm(inputs)
        for layer in self.hidden:
            x = layer(x)
        x = self.out(x)
        if residual is not None:
            x = x + residual
        return tf.math.l2_normalize(x, axis=-1)
