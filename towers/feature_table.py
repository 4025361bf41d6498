"""A string key → per-entity feature row table that lives inside the graph.

Why it exists: the towers are called with raw ids (training batches, exported signatures), but an item's text
vector, category, brand and price are properties of the catalogue, not of the request. Holding them in variables
(not graph constants, which a SavedModel caps at 2 GB) lets one lookup turn ids into features, and lets the
exported model answer for any catalogue item from its id alone. Unknown keys get row 0: zeros and "".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import tensorflow as tf
import tf_keras


class FeatureTable(tf_keras.layers.Layer):
    """``keys`` [B, ...] string → ``{column: values [B, ...]}`` plus ``known`` (key was in the table)."""

    def __init__(self, keys: Sequence[str], columns: Mapping[str, np.ndarray], **kwargs):
        super().__init__(**kwargs)
        keys = list(keys)
        self.size = len(keys)
        if not keys:  # StringLookup needs a vocabulary: one key no request can carry, and an unused row
            keys = ["\x00"]
            columns = {name: np.zeros((1, *np.asarray(v).shape[1:]), np.asarray(v).dtype)
                       if np.asarray(v).dtype != object else np.array([""], object)
                       for name, v in columns.items()}
        if len(set(keys)) != len(keys):
            raise ValueError(f"{self.name}: duplicate keys")
        self.lookup = tf_keras.layers.StringLookup(vocabulary=keys, num_oov_indices=1, mask_token=None,
                                                  name=f"{self.name}_lookup")
        self.column_names = tuple(columns)
        self._columns = {}
        for name, values in columns.items():
            values = np.asarray(values)
            if len(values) != len(keys):
                raise ValueError(f"{self.name}: column {name!r} has {len(values)} rows for {len(keys)} keys")
            default = np.zeros((1, *values.shape[1:]), values.dtype) if values.dtype != object else \
                np.full((1, *values.shape[1:]), "", object)
            variable = tf.Variable(np.concatenate([default, values]), trainable=False, name=name)
            setattr(self, f"column_{name}", variable)  # tracked, so checkpoints and SavedModels carry it
            self._columns[name] = variable

    def call(self, keys: tf.Tensor) -> dict[str, tf.Tensor]:
        index = self.lookup(keys)
        features = {name: tf.gather(variable, index) for name, variable in self._columns.items()}
        features["known"] = index > 0
        return features
