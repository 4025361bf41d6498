"""Forgetting a layer's attribute for good, so that a SavedModel does not carry it.

Why it exists: the export drops what the served graph never uses from the towers (the user tower's catalogue
table, the towers' text encoder, whose weights the export serves from its own packed copy). tf_keras's ``del``
of a tracked attribute removes it from the layer's sublayers but leaves it among the checkpoint's dependencies,
so ``tf.saved_model.save`` still wrote it: the whole catalogue table (Amazon Scientific: 11 MB) and, for the
encoder, a second copy of BERT.
"""

from __future__ import annotations

import tf_keras


def forget(layer: tf_keras.layers.Layer, name: str) -> None:
    """Sets ``layer.name`` to None, neither a sublayer nor a checkpoint dependency any more."""
    if hasattr(layer, name):
        delattr(layer, name)
    layer._delete_tracking(name)   # tf_keras's delattr skips it (a layer keeps its dependency names otherwise)
    setattr(layer, name, None)
