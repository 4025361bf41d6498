"""An exported version loaded in this process and asked as TF Serving asks it.

Why it exists: a signature function loaded with ``tf.saved_model.load`` takes every input as required, while TF
Serving fills an omitted optional input (``diversity``, ``exclude``, ``max_per_category``, ``search_query``) from
the SignatureDef's defaults. ``inspect``'s smoke query, the served-equals-evaluated check (``export/parity.py``)
and the benchmarks that measure the served graph (bench/served.py) all call a version that way; this is the one
place that does it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from export.ops import saved_model_proto


def signature_defaults(definition) -> dict[str, np.ndarray]:
    """The SignatureDef's default input values as numpy arrays (what TF Serving feeds for an omitted input)."""
    import tensorflow as tf

    return {name: tf.make_ndarray(proto) for name, proto in definition.defaults.items()}


class LoadedVersion:
    """A version directory loaded with the ScaNN and TF Text kernels registered; ``version(signature, **inputs)``
    runs one signature (omitted optional inputs take their defaults) and returns its outputs as numpy."""

    def __init__(self, version: str | Path):
        import scann  # noqa: F401 - kernels of a ScaNN index
        import tensorflow as tf
        import tensorflow_text  # noqa: F401 - kernels of the in-graph tokenizer

        self.path = Path(version)
        self.loaded = tf.saved_model.load(str(self.path))
        self.definitions = saved_model_proto(self.path).meta_graphs[0].signature_def

    def defaults(self, signature: str) -> dict[str, np.ndarray]:
        return signature_defaults(self.definitions[signature])

    def __call__(self, signature: str, **inputs) -> dict[str, np.ndarray]:
        import tensorflow as tf

        given = {**self.defaults(signature), **inputs}
        outputs = self.loaded.signatures[signature](**{name: tf.constant(value) for name, value in given.items()})
        return {name: value.numpy() for name, value in outputs.items()}
