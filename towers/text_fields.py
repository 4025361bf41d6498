"""Joining several text fields into the one string the encoder reads, in the graph.

Why it exists: the item text is title + description + category + brand (and the user text is profile + queries);
training builds it from the catalogue and the exported model builds it from request strings, so the joining has
to be one graph function, used by both, never a Python twin.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

SEPARATOR = ". "


def join_text_fields(fields: Sequence[tf.Tensor]) -> tf.Tensor:
    """[B] strings per field → [B] strings: the non-empty fields, stripped of a final full stop, joined
    with ". "."""
    stacked = tf.strings.strip(tf.stack([tf.reshape(f, [-1]) for f in fields], axis=1))
    stacked = tf.strings.regex_replace(stacked, r"[.。]+$", "")  # the separator ends each field
    kept = tf.ragged.boolean_mask(stacked, tf.strings.length(stacked) > 0)
    return tf.strings.reduce_join(kept, axis=1, separator=SEPARATOR)


def join_columns(columns: Sequence[Sequence[str]]) -> list[str]:
    """Eager convenience over :func:`join_text_fields` for Python lists (same code path, same result)."""
    if not columns or not len(columns[0]):
        return []
    joined = join_text_fields([tf.constant(list(c), tf.string) for c in columns])
    return [s.decode("utf-8") for s in joined.numpy()]
