"""Lexical vectors: a text's words (Latin words, CJK characters and character pairs), idf-weighted and sketched
into a small dense vector whose dot product approximates the tf-idf cosine of two texts.

Why it exists: a search box is asked for brands, model numbers and product names, and in a Chinese shop in a
script the English encoder reads as [UNK]. Dense similarity alone misses the exact word match that every search
engine ranks on: on the generated world's search log the words alone (tf-idf cosine) rank product types at
precision@10 0.75 where MiniLM's cosine gets 0.66, and the two together do better than either (docs/cold_start.md).
To keep one dot product over one index, the sparse tf-idf vector is folded into ``dim`` dense dimensions by a count
sketch (each token adds ±idf to ``HASHES`` hashed dimensions; a sparse Johnson-Lindenstrauss projection), so the
item vector carries it as one more block beside the learned and the BERT blocks (towers/semantic_channel.py).

Everything is TensorFlow string ops, so the same function tokenises the catalogue at training time, a new item in
``index add`` and a raw ``search_query`` inside the exported graph. The idf table is fitted on the catalogue's texts
when the model is built; items added later are weighted with it as it is.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf
import tf_keras

BUCKETS = 1 << 18    # idf table size: tokens are hashed into it (a catalogue has some 10^4 distinct tokens)
HASHES = 4           # dimensions each token is sketched into; 1 loses 0.04 precision@10 on the search log
_WORD = r"[^a-z0-9]+"
_CJK = r"[^\x{3400}-\x{4dbf}\x{4e00}-\x{9fff}]+"


def lexical_tokens(text: tf.Tensor) -> tf.RaggedTensor:
    """[B] strings → [B, None] tokens: lowercased Latin words and digit runs, and each run of CJK characters as
    its characters and its adjacent character pairs (Chinese has no spaces; pairs are most of its words)."""
    lower = tf.strings.lower(tf.reshape(text, [-1]), encoding="utf-8")
    words = tf.strings.split(tf.strings.strip(tf.strings.regex_replace(lower, _WORD, " ")))
    runs = tf.strings.split(tf.strings.strip(tf.strings.regex_replace(lower, _CJK, " ")))
    characters = tf.strings.unicode_split(runs, "UTF-8")                    # [B, runs, characters]
    pairs = tf.strings.ngrams(characters, 2, separator="")                  # [B, runs, characters - 1]
    return tf.concat([words, characters.merge_dims(1, 2), pairs.merge_dims(1, 2)], axis=1)


def fit_idf(texts: Sequence[str], buckets: int = BUCKETS, batch_size: int = 4096) -> np.ndarray:
    """[buckets] inverse document frequencies of the hashed tokens of ``texts`` (smoothed: log((1 + N) / (1 + df))
    + 1, so a token no text has gets the largest weight and none gets 0)."""
    df = np.zeros(buckets, np.float64)
    for start in range(0, len(texts), batch_size):
        tokens = lexical_tokens(tf.constant(list(texts[start:start + batch_size]), tf.string))
        hashed = tf.strings.to_hash_bucket_fast(tokens.flat_values, buckets).numpy()
        pairs = np.unique(tokens.value_rowids().numpy() * buckets + hashed)   # each (text, bucket) once
        df += np.bincount(pairs % buckets, minlength=buckets)
    return (np.log((1.0 + len(texts)) / (1.0 + df)) + 1.0).astype(np.float32)


class LexicalVectors(tf_keras.layers.Layer):
    """[B] strings → [B, dim] unit lexical vectors (zeros for a text without a token)."""

    def __init__(self, dim: int, idf: np.ndarray | None = None, hashes: int = HASHES, **kwargs):
        super().__init__(**kwargs)
        self.dim = int(dim)
        self.hashes = int(hashes)
        idf = np.ones(BUCKETS, np.float32) if idf is None else np.asarray(idf, np.float32)
        self.buckets = int(idf.shape[0])
        self.idf = tf.Variable(idf, trainable=False, name="idf")   # tracked: checkpoints and exports carry it

    def call(self, text: tf.Tensor) -> tf.Tensor:
        text = tf.reshape(text, [-1])
        # A served request without a search query (most of them) skips the string work.
        return tf.cond(tf.reduce_any(tf.strings.length(text) > 0), lambda: self._vectors(text),
                       lambda: tf.zeros([tf.size(text), self.dim]))

    def _vectors(self, text: tf.Tensor) -> tf.Tensor:
        tokens = lexical_tokens(text)
        rows = tf.cast(tokens.value_rowids(), tf.int64)
        flat = tokens.flat_values
        weight = tf.gather(self.idf, tf.strings.to_hash_bucket_fast(flat, self.buckets)) / float(self.hashes) ** 0.5
        batch = tf.cast(tokens.nrows(), tf.int64)
        sketch = tf.zeros([batch * self.dim], tf.float32)
        for j in range(self.hashes):   # the j-th hash picks a dimension and a sign: [0, dim) +, [dim, 2·dim) −
            slot = tf.strings.to_hash_bucket_fast(tf.strings.join([f"{j}\x1f", flat]), 2 * self.dim)
            sign = tf.where(slot < self.dim, 1.0, -1.0)
            sketch += tf.math.unsorted_segment_sum(weight * sign, rows * self.dim + slot % self.dim, batch * self.dim)
        return tf.math.l2_normalize(tf.reshape(sketch, [-1, self.dim]), axis=-1)
