"""The repeat offset: one fitted number added to the score of every candidate already in the request's history.

Why it exists: whether a shopper takes the same item again is a property of the shop (a consumable is re-bought,
a lipstick or a book seldom), and the towers do not model it. A query built from the history sits close to the
history's own items, so wherever they stay candidates (``recommend_including_history``, ``score``, evaluate's
``history_kept``: the protocol of the published numbers) they crowd the top of the list, though on Amazon Beauty
no validation target is an item the user already has and on Amazon Scientific 0.6% are. A sequential model learns
this from its next-item targets; here it is one number, fitted after training on the validation split with the
history kept (training/calibrate.py ``fit_repeat_offset``): negative where the shop's users seldom repeat, positive
where they re-buy. An item counts once however often the history holds it. 0, its start (and what a run trained
before it has), leaves every score as it was; ``serving_default`` excludes history items, so it never reaches it,
and neither does evaluate's history-excluded block, which stands for it (a target that repeats a history item stays
a candidate there, scored without the offset).
"""

from __future__ import annotations

import tf_keras


class RepeatOffset(tf_keras.layers.Layer):
    """Holds the offset: a non-trainable scalar, so the checkpoint carries it. The scorers add it themselves (numpy
    in training/evaluate.py ``add_repeat_offset``, a constant of the graph in export/signatures.py)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.offset = self.add_weight(name="offset", shape=[], initializer="zeros", trainable=False)

    def set_offset(self, offset: float) -> None:
        self.offset.assign(float(offset))

    def value(self) -> float:
        return float(self.offset.numpy())

    def describe(self) -> dict:
        """The offset as metrics.json and the model card record it."""
        return {"offset": round(self.value(), 6)}
