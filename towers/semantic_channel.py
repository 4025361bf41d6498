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

A request may also carry a search query (the served signatures' optional ``search_query``): what the shopper typed
into a search box now, as opposed to who they are. It adds its own unit text vector with its own weight,

    query = [u, β_kind · q_text + β_search · s_text]

because the two want opposite weights: a user's own text is a broad taste that the learned towers read better than
the words (its fitted weight is ~0.1), while a search query names one product type that the words read best (the
generated world's search queries want ~5 and more: docs/quality.md). Training has no search requests, so
``β_search`` is not learned by the loss: it is fitted on a search log's ground truth where the data has one
(training/calibrate.py), and is ``DEFAULT_SEARCH_WEIGHT`` otherwise.

With ``model.lexical_dim``, each item also carries its words as a sketched tf-idf vector (towers/lexical.py), and a
search query adds its own with a weight of its own:

    query = [u, β_kind · q_text + β_search · s_text, β_words · s_words]      item = [i, i_text, i_words]

so a search ranks by meaning and by the words it shares with the item (the brand, the product name, Chinese words
the English encoder reads as [UNK]); requests without a search have zeros there.
"""

from __future__ import annotations

import math

import tensorflow as tf
import tf_keras

KINDS = ("text_only", "history_only", "both")
INITIAL_WEIGHT = 0.2     # the weight a fixed fusion picked on Amazon Scientific's validation split
SMALLEST_WEIGHT = 1e-4   # softplus never reaches 0: a weight set to 0 is stored as this
# β_search where no search log fitted it: the words rank and the learned part (the user, or an unknown one's
# prior) only breaks near-ties between equally matching items.
DEFAULT_SEARCH_WEIGHT = 20.0
# β_words where no search log fitted it: as much as the meaning (on the generated world's search log the two
# together beat either alone from a 1:2 to a 2:1 mix; docs/cold_start.md).
DEFAULT_WORDS_WEIGHT = 20.0


def _inverse_softplus(value: float) -> float:
    return math.log(math.expm1(value))


class SemanticQuery(tf_keras.layers.Layer):
    """(user text [B, T] | None, has text [B, 1], pooled history text [B, T] | None, has history [B, 1]) → the
    query's semantic part [B, T], already scaled by its kind's weight."""

    def __init__(self, words: bool = False, **kwargs):
        """``words``: the model has the lexical block (``model.lexical_dim``), and so a weight for it."""
        super().__init__(**kwargs)
        self.kind_logits = self.add_weight(name="kind_weights", shape=[len(KINDS)], trainable=True,
                                           initializer=tf_keras.initializers.Constant(
                                               _inverse_softplus(INITIAL_WEIGHT)))
        self.text_share_logit = self.add_weight(name="text_share", shape=[], trainable=True,
                                                initializer="zeros")
        # Not trainable: no training step carries a search query (set by calibration, or the default).
        self.search_logit = self.add_weight(name="search_weight", shape=[], trainable=False,
                                            initializer=tf_keras.initializers.Constant(
                                                _inverse_softplus(DEFAULT_SEARCH_WEIGHT)))
        self.words_logit = (self.add_weight(name="words_weight", shape=[], trainable=False,
                                            initializer=tf_keras.initializers.Constant(
                                                _inverse_softplus(DEFAULT_WORDS_WEIGHT))) if words else None)
        # a Chinese search's words weight as a multiple of the words weight (towers/script_centering.py's rule): a
        # Chinese query's characters match Chinese titles only, so where the catalogue is mostly in another
        # language its meaning should lead. 1 until calibration fits it, and in a checkpoint written before it was
        # (the same weight as before for every search)
        self.chinese_words_factor = (self.add_weight(name="chinese_words_factor", shape=[], trainable=False,
                                                     initializer="ones") if words else None)
        self._frozen: tuple[float, ...] | None = None

    def freeze(self) -> None:
        """Traces from now on take the weights as constants (kinds, text share, search, words): the export calls
        it, so that a served request computes no softplus or sigmoid and reads no variable for them; the graph
        folds them into the arithmetic (docs/benchmarks.md). Setting a weight thaws them again."""
        self._frozen = None
        words = self.words_logit is not None
        self._frozen = (*self.kind_weights().numpy().tolist(), float(self.text_share().numpy()),
                        float(self.search_weight().numpy()), float(self.words_weight().numpy()) if words else 0.0,
                        float(self.chinese_words_factor.numpy()) if words else 1.0)

    def _weights(self, variable_form, *position: int):
        """The frozen constant(s) at ``position``, or ``variable_form()`` when not frozen."""
        if self._frozen is None:
            return variable_form()
        values = [self._frozen[p] for p in position]
        return tf.constant(values if len(values) > 1 else values[0], tf.float32)

    def kind_weights(self) -> tf.Tensor:
        return self._weights(lambda: tf.math.softplus(self.kind_logits), 0, 1, 2)

    def set_kind_weights(self, weights) -> None:
        """Sets the per-kind weights (in KINDS order; each at least SMALLEST_WEIGHT), e.g. to values fitted after
        training (training/calibrate.py)."""
        self._frozen = None
        self.kind_logits.assign([_inverse_softplus(max(float(w), SMALLEST_WEIGHT)) for w in weights])

    def search_weight(self) -> tf.Tensor:
        return self._weights(lambda: tf.math.softplus(self.search_logit), 4)

    def set_search_weight(self, weight: float) -> None:
        self._frozen = None
        self.search_logit.assign(_inverse_softplus(max(float(weight), SMALLEST_WEIGHT)))

    def search(self, search_text: tf.Tensor) -> tf.Tensor:
        """The search query's part [B, T] from its text vectors ``search_text`` [B, T] (zeros where a row has no
        search, which stay zeros), to add to the :meth:`call` part."""
        return tf.math.l2_normalize(search_text, axis=-1) * self.search_weight()

    def words_weight(self) -> tf.Tensor:
        return self._weights(lambda: tf.math.softplus(self.words_logit), 5)

    def set_words_weight(self, weight: float) -> None:
        self._frozen = None
        self.words_logit.assign(_inverse_softplus(max(float(weight), SMALLEST_WEIGHT)))

    def chinese_words_weight(self) -> tf.Tensor:
        return self.words_weight() * self._weights(lambda: tf.convert_to_tensor(self.chinese_words_factor), 6)

    def set_chinese_words_weight(self, weight: float) -> None:
        """Sets a Chinese search's words weight (kept as a multiple of the words weight: set that one first)."""
        self._frozen = None
        self.chinese_words_factor.assign(max(float(weight), 0.0) / float(tf.math.softplus(self.words_logit)))

    def words(self, search_words: tf.Tensor, chinese: tf.Tensor | None = None) -> tf.Tensor:
        """The search query's words block [B, W] from its unit lexical vectors (zeros: no search), weighted by
        the Chinese searches' own weight where ``chinese`` [B] is true."""
        if chinese is None:
            return search_words * self.words_weight()
        weight = tf.where(tf.reshape(chinese, [-1, 1]), self.chinese_words_weight(), self.words_weight())
        return search_words * weight

    def text_share(self) -> tf.Tensor:
        return self._weights(lambda: tf.math.sigmoid(self.text_share_logit), 3)

    def describe(self) -> dict:
        """The learned weights, for the run's log and the model card."""
        weights = self.kind_weights().numpy().tolist()
        return {**{f"weight_{k}": round(float(w), 6) for k, w in zip(KINDS, weights)},
                "user_text_share_when_both": round(float(self.text_share().numpy()), 6),
                "weight_search": round(float(self.search_weight().numpy()), 6),
                **({"weight_search_words": round(float(self.words_weight().numpy()), 6),
                    "weight_search_words_chinese": round(float(self.chinese_words_weight().numpy()), 6)}
                   if self.words_logit is not None else {})}

    def call(self, user_text: tf.Tensor | None, has_text: tf.Tensor, history_text: tf.Tensor | None,
             has_history: tf.Tensor | None) -> tf.Tensor:
        """``user_text`` [B, T] and ``history_text`` [B, T] (the history items' pooled text vectors) may be None
        where the tower has no such input (``has_history`` then too); ``has_text`` and ``has_history`` [B, 1] are
        1.0 where a row has it, and a row without it has a zero vector there.

        One mix serves every kind: ``normalise(share · text + (1 - share) · history)`` is the mix where a row has
        both and the one it has where it has one (the other is zero), so the kinds differ only in their weight
        (fewer ops for a served request than a mix per kind)."""
        text = None if user_text is None else tf.math.l2_normalize(user_text, axis=-1)
        history = None if history_text is None else tf.math.l2_normalize(history_text, axis=-1)
        weights = self.kind_weights()
        if text is not None and history is not None:
            share = self.text_share()
            query = tf.math.l2_normalize(share * text + (1.0 - share) * history, axis=-1)
            # text only: w0; history only: w1; both: w0 + w1 + (w2 - w0 - w1) = w2
            scale = has_text * weights[0] + has_history * weights[1] + \
                has_text * has_history * (weights[2] - weights[0] - weights[1])
        elif text is not None:
            query, scale = text, has_text * weights[0]
        else:
            query, scale = history, has_history * weights[1]
        return query * scale
