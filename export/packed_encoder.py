"""The served text encoder's weights in one variable, so that a request forwards one handle instead of ~200.

Why it exists: a query signature holds BERT for the requests that carry text, and every request, with text or
without, passes each of BERT's weights (~200 variables for MiniLM or e5) into the branch that runs it: a variable
handle, and a forwarding node per function boundary, each. On Amazon Scientific's model that was ~0.3 ms of a
~1.3 ms id+history request that never runs BERT (docs/benchmarks.md). Here the export copies the encoder's weights
into one flat variable, and while the encoder is traced every layer attribute that held a weight holds its slice of
that variable instead, so the traced functions capture that one variable. Each weight starts on an ``ALIGN``
boundary, so its slice shares the variable's memory (TensorFlow's aligned first-dimension slice) rather than
copying it for a request with text. The arithmetic is the encoder's own: its layers run unchanged on the same
numbers.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import tensorflow as tf

ALIGN = 32   # floats: 128 bytes, above any CPU's vector alignment, so a weight's slice is a view


class PackedWeights(tf.Module):
    """One float32 variable holding every weight of ``layer`` (a Keras layer tree), and the context in which the
    layer's own attributes hold slices of it."""

    def __init__(self, layer: tf.Module, name: str = "packed_encoder"):
        super().__init__(name=name)
        self._layer = self._no_dependency(layer)     # its own variables are not saved: the packed copy is
        unique = {id(variable): variable for variable in layer.variables}
        layout: list[tuple[tf.Variable, int, tuple[int, ...]]] = []
        offset = 0
        for variable in unique.values():
            if variable.dtype != tf.float32:
                raise ValueError(f"packed encoder: {variable.name} is {variable.dtype.name}, not float32")
            shape = tuple(int(d) for d in variable.shape)
            layout.append((variable, offset, shape))
            offset += -(-max(int(np.prod(shape)), 1) // ALIGN) * ALIGN
        self._layout = self._no_dependency(layout)   # where each weight sits (not saved: the weights are)
        values = np.zeros(offset, np.float32)
        for variable, start, shape in layout:
            values[start:start + int(np.prod(shape))] = variable.numpy().ravel()
        self.weights = tf.Variable(values, trainable=False, name="weights")

    def __len__(self) -> int:
        return len(self._layout)

    @contextlib.contextmanager
    def substituted(self) -> Iterator[None]:
        """Inside a function being traced: every attribute of the layer or of a layer in it that holds one of the
        packed variables holds that variable's slice of one read of the packed variable; restored on exit."""
        whole = self.weights.read_value()
        slices = {id(variable): tf.reshape(whole[start:start + int(np.prod(shape))], shape)
                  for variable, start, shape in self._layout}
        swapped = []
        try:
            for module in (self._layer, *self._layer.submodules):
                for attribute, value in list(vars(module).items()):
                    if isinstance(value, tf.Variable) and id(value) in slices:
                        object.__setattr__(module, attribute, slices[id(value)])
                        swapped.append((module, attribute, value))
            yield
        finally:
            for module, attribute, value in swapped:
                object.__setattr__(module, attribute, value)
