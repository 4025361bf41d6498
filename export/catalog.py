"""The served catalogue: item id → row, and per row the item's vector, category and explanation words.

Why it exists: a served request needs, for any catalogue item, its item-tower vector (to pool a history, to
explain, to diversify, to score a given candidate), its category (``max_per_category``) and its words (to say
which words of a query it matches). Computing those once at export, instead of running the item tower over text
features on every request, makes requests cheaper; holding them in open-shaped variables and a mutable hash
table, instead of constants and a static vocabulary, is what lets ``twotower index add`` append new items to a
*loaded* SavedModel (``append``, saved with it) and write the next version without the run that trained it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from export.index import growable

STRING = tf.string


class ServedCatalog(tf.Module):
    """Rows 0..N-1 of ``ids``, ``vectors`` [N, D] (unit), ``category`` and ``words``; unknown ids look up to -1."""

    def __init__(self, ids: Sequence[str], vectors: np.ndarray, categories: Sequence[str], words: Sequence[str],
                 name: str = "catalog"):
        super().__init__(name=name)
        ids = [str(i) for i in ids]
        if len(set(ids)) != len(ids):
            raise ValueError("served catalogue: duplicate item ids")
        self.dim = int(vectors.shape[1])
        self.keys = tf.lookup.experimental.MutableHashTable(STRING, tf.int64, default_value=-1, name="item_rows")
        self.keys.insert(tf.constant(ids, STRING), tf.range(len(ids), dtype=tf.int64))
        self.ids = growable(np.array(ids, dtype=object), "ids")
        self.vectors = growable(np.asarray(vectors, np.float32), "vectors")
        self.category = growable(np.array([str(c) for c in categories], dtype=object), "category")
        self.words = growable(np.array([str(w) for w in words], dtype=object), "words")

    def rows(self, ids: tf.Tensor) -> tf.Tensor:
        """Catalogue rows of ``ids`` (any shape); -1 for ids not in the catalogue (and for ""). A hash table's
        lookup loses the static shape; the towers need at least the rank (a history-only user tower normalises
        the pooled history vectors), so it is restored here."""
        return tf.ensure_shape(self.keys.lookup(ids), ids.shape)

    def size(self) -> tf.Tensor:
        """The number of items, from the variable's shape alone: ``tf.shape`` of the variable reads it first, and
        a variable that gathers serve from is copied on every read (TF's copy-on-read mode once a sparse op has
        touched it), which for the ids' strings cost a request 60-100 us (docs/benchmarks.md)."""
        return tf.raw_ops.VariableShape(input=self.ids.handle, out_type=tf.int32)[0]

    def vectors_of(self, rows: tf.Tensor) -> tf.Tensor:
        """[..., D] vectors of ``rows``; zeros where a row is -1. Gathered from a read of the whole variable, which
        shares its buffer (no copy), rather than from the variable itself: a sparse op on a variable switches it to
        TF's copy-on-read mode, and the brute-force index reads these same vectors whole on every request, which
        then copied all of them (Amazon Scientific: 12 MB, ~0.9 ms of a request; docs/benchmarks.md)."""
        vectors = tf.gather(self.vectors.value(), tf.maximum(rows, 0))
        vectors = tf.ensure_shape(vectors, rows.shape.concatenate([self.dim]))
        return vectors * tf.cast(rows >= 0, tf.float32)[..., None]

    @tf.function(input_signature=(tf.TensorSpec([None], STRING), tf.TensorSpec([None, None], tf.float32),
                                  tf.TensorSpec([None], STRING), tf.TensorSpec([None], STRING)))
    def append(self, ids: tf.Tensor, vectors: tf.Tensor, category: tf.Tensor, words: tf.Tensor) -> tf.Tensor:
        """Adds rows at the end (ids must be new: the caller checks); returns the new number of items."""
        start = tf.cast(self.size(), tf.int64)
        self.keys.insert(ids, start + tf.range(tf.size(ids, out_type=tf.int64)))
        self.ids.assign(tf.concat([self.ids, ids], axis=0))
        self.vectors.assign(tf.concat([self.vectors, vectors], axis=0))
        self.category.assign(tf.concat([self.category, category], axis=0))
        self.words.assign(tf.concat([self.words, words], axis=0))
        return self.size()
