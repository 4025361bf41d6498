"""The projection head both towers end in: dense layers, then an L2-normalised output.

Why it exists: with unit-length vectors the dot product is a cosine, so the retrieval temperature has a fixed
meaning and a nearest-neighbour index (ScaNN, brute force) ranks by the same score the model was trained on.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf
import tf_keras


class LayerNorm(tf_keras.layers.LayerNormalization):
    """tf_keras's LayerNormalization over the last axis, served with plain ops. Its fused kernel (a FusedBatchNormV3
    over the reshaped input) took 200-275 µs of a one-row request's ~1.3 ms in the exported graph (a step-stats
    profile of the demo model), the plain ops about 10 µs (docs/benchmarks.md). Training keeps the fused kernel, so
    a run trains to the same weights as before; the two agree to ~1e-6."""

    def call(self, inputs: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        if training:
            return super().call(inputs)
        mean, variance = tf.nn.moments(inputs, axes=[-1], keepdims=True)
        return (inputs - mean) * tf.math.rsqrt(variance + self.epsilon) * self.gamma + self.beta


class ProjectionHead(tf_keras.layers.Layer):
    """[B, F] → [B, dim], L2-normalised; ``residual`` [B, dim] (optional) is added before normalising."""

    def __init__(self, hidden_units: Sequence[int], dim: int, **kwargs):
        super().__init__(**kwargs)
        self.hidden = [tf_keras.layers.Dense(u, activation="gelu", name=f"hidden_{i}")
                       for i, u in enumerate(hidden_units)]
        self.norm = LayerNorm(name="norm")
        self.out = tf_keras.layers.Dense(dim, name="out")

    def call(self, inputs: tf.Tensor, residual: tf.Tensor | None = None, training: bool | None = None) -> tf.Tensor:
        x = self.norm(inputs, training=training)
        for layer in self.hidden:
            x = layer(x)
        x = self.out(x)
        if residual is not None:
            x = x + residual
        return tf.math.l2_normalize(x, axis=-1)
