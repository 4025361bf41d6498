"""A loaded version's graph in a TensorFlow Session, and one signature's feeds and fetches bound to it.

Why it exists: TF Serving runs a SavedModel through a Session (``LoadSavedModel`` in
tensorflow/cc/saved_model/loader.cc): the MetaGraph is imported once, its variables restored and its init op run,
and a Predict feeds the tensors the SignatureDef names and fetches the output tensors it names. Doing the same
here instead of calling TF2's eager signature functions is what TF Serving does, so any SavedModel it serves is
served the same way (TF1 exports whose signatures name graph tensors included), and it is faster for small
graphs: the Session's C call with feeds and fetches resolved at load skips the eager function-call machinery, and
the graph runs less cold after the idle gap between two requests (docs/benchmarks.md, "Third pass: the graph in a
Session"). One copy of the weights is loaded per version, as before.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow.python.saved_model import loader_impl


class ShapeMisfit(ValueError):
    """An input whose shape its placeholder cannot take (TensorFlow's own words), refused before the graph runs."""


class GraphSession:
    """One version's MetaGraph imported into its own graph and Session (variables restored, init op run)."""

    def __init__(self, path: Path, tags: Sequence[str]):
        self.graph = tf.Graph()
        # no config: the process's eager context configuration, so the server's thread-count flags apply
        self.session = tf.compat.v1.Session(graph=self.graph)
        try:
            with self.graph.as_default():
                loader_impl.SavedModelLoader(str(path)).load(self.session, list(tags))
        except BaseException:
            self.session.close()
            raise

    def bind(self, definition: meta_graph_pb2.SignatureDef) -> BoundSignature | None:
        """The signature's feeds and fetches, bound once; None when one of its tensors is not in the graph or is
        not a plain tensor (sparse or composite encodings, which a Predict cannot feed or return either)."""
        try:
            return BoundSignature(self, definition)
        except (KeyError, ValueError):
            return None

    def close(self) -> None:
        self.session.close()


def plain_name(info: meta_graph_pb2.TensorInfo) -> str:
    if info.WhichOneof("encoding") != "name":
        raise ValueError("not a plain tensor")
    return info.name


class BoundSignature:
    """A signature's feeds and fetches resolved once to the graph's outputs, and run with the Session's C call
    (``Session.run`` without its per-call Python: fetch-structure handling, feed conversion and its feed shape
    checks, which TF Serving's C++ Session does not make either). Feeds are in sorted alias order, every output
    is fetched. Validated inputs have the signature's dtypes already; a placeholder's shape is checked here."""

    def __init__(self, graph: GraphSession, definition: meta_graph_pb2.SignatureDef):
        self.session = graph.session
        self.names = sorted(definition.inputs)
        self.outputs = sorted(definition.outputs)
        feeds = [graph.graph.get_tensor_by_name(plain_name(definition.inputs[n])) for n in self.names]
        fetches = [graph.graph.get_tensor_by_name(plain_name(definition.outputs[n])) for n in self.outputs]
        # a placeholder's shape is a promise the graph was built on; any other fed tensor (TF1 exports feed
        # identities) takes what it is given, as in TF Serving's C++ Session, and the graph decides
        self.placeholders = {name: tensor for name, tensor in zip(self.names, feeds)
                             if tensor.op.type == "Placeholder" and tensor.shape.rank is not None}
        self._dims = [(name, tuple(tensor.shape.as_list())) for name, tensor in self.placeholders.items()]
        self._feeds = [tensor._as_tf_output() for tensor in feeds]   # what Session.run feeds
        self._fetches = [tensor._as_tf_output() for tensor in fetches]
        self.strings = {name for name in self.outputs if definition.outputs[name].dtype == types_pb2.DT_STRING}
        graph.session._extend_graph()   # what Session.run does before its first call

    def misfit(self, inputs: Mapping[str, np.ndarray]) -> str | None:
        """TensorFlow's words for the first input whose shape does not fit its placeholder (None when all fit)."""
        for name, dims in self._dims:
            shape = np.shape(inputs[name])
            if len(shape) != len(dims) or any(want is not None and want != have for want, have in zip(dims, shape)):
                tensor = self.placeholders[name]
                return f"Cannot feed value of shape {shape} for Tensor {tensor.name}, which has shape {tensor.shape}"
        return None

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Every output as numpy (strings as bytes objects, scalars as 0-d arrays). Raises TensorFlow's OpError
        from the graph, and ShapeMisfit (a ValueError) for an input whose shape does not fit its placeholder."""
        misfit = self.misfit(inputs)
        if misfit:
            raise ShapeMisfit(misfit)
        values = self.session._call_tf_sessionrun(
            None, {feed: inputs[name] for name, feed in zip(self.names, self._feeds)}, self._fetches, [], None)
        return {name: self._array(name, value) for name, value in zip(self.outputs, values)}

    def _array(self, name: str, value: object) -> np.ndarray:
        if isinstance(value, np.ndarray):
            return value
        return np.array(value, dtype=object) if name in self.strings else np.asarray(value)
