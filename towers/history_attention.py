"""A small Transformer encoder over a user's history items, read out at the most recent one.

Why it exists: a recency-weighted mean (``HistoryPooling``) forgets order and treats every item alike, while what
a shopper looks at next depends most on the last few items and on how they relate (SASRec, Kang & McAuley 2018).
Self-attention over the history, with a learned embedding of each item's age, lets the tower learn both. Built on
Keras' ``MultiHeadAttention``; its dropout is seeded (``SeededDropout``) so a resumed run trains exactly like one
that was never interrupted.
"""

from __future__ import annotations

import tensorflow as tf
import tf_keras

from towers.seeded_mask import SeededDropout


class HistoryAttention(tf_keras.layers.Layer):
    """vectors [B, H, D] (most recent last), mask [B, H] bool → [B, D]: pre-norm Transformer blocks over the
    history, the output at the most recent valid position (zeros for an empty history).

    The residual stream starts from the item vectors themselves, every block's branch is gated by a learned scalar
    that starts at zero (ReZero), and the stream is not normalised at the end: an untrained encoder answers "the
    last item" (a strong baseline in the item space) and training learns what to add to it.
    """

    def __init__(self, dim: int, layers: int = 2, heads: int = 2, max_len: int = 50, dropout: float = 0.0,
                 seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        if dim % heads:
            raise ValueError(f"model.history_heads ({heads}) must divide model.embedding_dim ({dim})")
        self.max_len = int(max_len)
        self.age = tf_keras.layers.Embedding(self.max_len, dim, name="age")
        self.blocks = []
        for i in range(layers):
            self.blocks.append({
                "norm_attention": tf_keras.layers.LayerNormalization(name=f"block{i}_norm_attention"),
                "attention": tf_keras.layers.MultiHeadAttention(heads, dim // heads, name=f"block{i}_attention"),
                "norm_ffn": tf_keras.layers.LayerNormalization(name=f"block{i}_norm_ffn"),
                "ffn_in": tf_keras.layers.Dense(2 * dim, activation="gelu", name=f"block{i}_ffn_in"),
                "ffn_out": tf_keras.layers.Dense(dim, name=f"block{i}_ffn_out"),
                "dropout": SeededDropout(dropout, seed + 100 + i, name=f"block{i}_dropout"),
            })
        self.input_dropout = SeededDropout(dropout, seed + 99, name="input_dropout")
        # ReZero (Bachlechner et al. 2021): each residual branch is scaled by a learned gate that starts at 0
        self.gates = self.add_weight(name="gates", shape=(layers, 2), initializer="zeros", trainable=True)

    def positions(self, mask: tf.Tensor) -> tf.Tensor:
        """[B, H] index of each item's learned position embedding: its age, how many real items come after it
        (0 = the most recent), so padding and unknown items in between shift nothing."""
        return tf.cumsum(tf.cast(mask, tf.int32), axis=1, exclusive=True, reverse=True)

    def attends(self, mask: tf.Tensor) -> tf.Tensor:
        """[B, H, H] which key each query position may attend to: every real item, from every real item."""
        return mask[:, :, None] & mask[:, None, :]

    def encode(self, vectors: tf.Tensor, mask: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        """[B, H, D] the residual stream after the blocks, at every position (zeros at masked ones)."""
        valid = tf.cast(mask, vectors.dtype)[:, :, None]
        position = tf.minimum(self.positions(mask), self.max_len - 1)
        x = self.input_dropout((vectors + self.age(position)) * valid, training=training)
        pairs = self.attends(mask)                                            # query × key
        for i, block in enumerate(self.blocks):
            h = block["norm_attention"](x)
            h = block["attention"](h, h, attention_mask=pairs, training=training)
            x = x + self.gates[i, 0] * block["dropout"](h, training=training) * valid
            h = block["ffn_out"](block["ffn_in"](block["norm_ffn"](x)))
            x = x + self.gates[i, 1] * block["dropout"](h, training=training) * valid
        return x

    def call(self, vectors: tf.Tensor, mask: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        x = self.encode(vectors, mask, training=training)
        length = tf.shape(vectors)[1]
        last = tf.reduce_max(tf.where(mask, tf.range(length)[None, :], -1), axis=1)   # most recent real item
        out = tf.gather(x, tf.maximum(last, 0), batch_dims=1)
        return tf.where((last >= 0)[:, None], out, tf.zeros_like(out))
