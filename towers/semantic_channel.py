"""The semantic channel: the raw BERT vectors' own similarity, added to the learned score with learned weights.

Why it exists: the towers learn a strong collaborative space but keep only a category-level trace of what the
words say, so a text-only request ("lightweight camping tent for two") or a freshly added item is found worse
than plain BERT similarity finds it. Here the query side gets a text vector of its own, the user's text and the
recency-weighted mean of the history items' text vectors mixed with a learned weight, and each side appends its
text vector to its learned vector:

    query = [u, β_kind · q_text]      item = [i, i_text]      query · item = u · i + β_kind · cos(q_text, i_text)

so one dot product (one nearest-neighbour search over one index) gives the fused score. ``β_kind`` is learned
per request kind (text only, history only, both), because how far words alone can be trusted differs between a
search-like request and a long history; the mixing weight of the user's text against the history's is learned
too. A request with neither gets no semantic part (zeros).
"""

from __future__ import annotations

import math

import tensorflow as tf
import tf_keras

KINDS = ("text_only", "history_only", "both")
INITIAL_WEIGHT = 0.2     # the weight a fixed fusion picked on Amazon Scientific's validation split


def _inverse_softplus(value: float) -> float:
    return math.log(math.expm1(value))


class SemanticQuery(tf_keras.layers.Layer):
    """(user text [B, T] | None, has text [B, 1], history text vectors [B, H, T] | None, history mask [B, H],
    history weights [B, H]) → the query's semantic part [B, T], already scaled by its kind's weight."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.kind_logits = self.add_weight(name="kind_weights", shape=[len(KINDS)], trainable=True,
                                           initializer=tf_keras.initializers.Constant(
                                               _inverse_softplus(INITIAL_WEIGHT)))
        self.text_share_logit = self.add_weight(name="text_share", shape=[], trainable=True,
                                                initializer="zeros")

    def kind_weights(self) -> tf.Tensor:
        return tf.math.softplus(self.kind_logits)

    def text_share(self) -> tf.Tensor:
        return tf.math.sigmoid(self.text_share_logit)

    def describe(self) -> dict:
        """The learned weights, for the run's log and the model card."""
        weights = self.kind_weights().numpy().tolist()
        return {**{f"weight_{k}": round(float(w), 6) for k, w in zip(KINDS, weights)},
                "user_text_share_when_both": round(float(self.text_share().numpy()), 6)}

    def call(self, user_text: tf.Tensor | None, has_text: tf.Tensor, history_text: tf.Tensor | None,
             history_weights: tf.Tensor | None) -> tf.Tensor:
        parts, has_history = [], None
        if history_text is not None:
            total = tf.reduce_sum(history_weights, axis=1, keepdims=True)                   # [B, 1]
            pooled = tf.reduce_sum(history_text * history_weights[:, :, None], axis=1) / tf.maximum(total, 1e-9)
            has_history = tf.cast(total > 0, tf.float32)
            parts.append(("history", tf.math.l2_normalize(pooled, axis=-1) * has_history))
        if user_text is not None:
            parts.append(("text", tf.math.l2_normalize(user_text, axis=-1) * has_text))
        values = dict(parts)
        text_flag = has_text if user_text is not None else None
        if "text" in values and "history" in values:
            share = self.text_share()
            both = text_flag * has_history
            mixed = tf.math.l2_normalize(share * values["text"] + (1.0 - share) * values["history"], axis=-1)
            query = both * mixed + (1.0 - both) * (values["text"] + values["history"])   # at most one is non-zero
        else:
            query = values.get("text", values.get("history"))
            both = tf.zeros_like(query[:, :1])
        text_only = (text_flag if text_flag is not None else tf.zeros_like(both)) * (1.0 - both)
        history_only = (has_history if has_history is not None else tf.zeros_like(both)) * (1.0 - both)
        weights = self.kind_weights()
        scale = text_only * weights[0] + history_only * weights[1] + both * weights[2]      # [B, 1]
        return query * scale
