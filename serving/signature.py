"""One signature of a loaded model: checks a request's tensors against the SignatureDef, runs it, filters outputs.

Why it exists: TF Serving checks every request against the SignatureDef before it touches the graph: the input
names (missing or extra inputs, predict_util.cc) and that each tensor parses; shapes are left to the graph, so a
Predict of ``x`` shaped [1] reaches a signature declared [-1, 1] and the graph decides. Dtypes are checked here
too (the graph would refuse them anyway, with a message naming no tensor). When the graph does refuse a request,
the error keeps its canonical code; if an input's shape did not fit the SignatureDef, or a batch was empty, the
message says which tensor. Both front-ends, the batcher and the warm-up replay go through this one class, so a
request is judged the same way however it arrives.

Optional inputs: an input with a value in the SignatureDef's ``defaults`` map may be left out, and the default is
fed instead, as TF Serving's Predict does (``GetInputValues`` in tensorflow/cc/saved_model/util.cc). Beyond that,
an optional input given (or defaulted) with one row while the batch has more is repeated to every row, so that
it can be batched with other requests; the graph reads one row as "all rows" anyway.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence

import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import meta_graph_pb2

from serving.errors import ServingError, invalid
from serving.session import BoundSignature, ShapeMisfit

log = logging.getLogger("twotower.serving")
CODES = {code.value[0]: code for code in grpc.StatusCode}
MAX_ERROR_CHARS = 400
FUNCTION_NODE = re.compile(r"\{\{function_node [^}]*\}\}\s*")


def dtype_name(enum: int) -> str:
    return tf.dtypes.as_dtype(enum).name if enum != types_pb2.DT_INVALID else "invalid"


def array_dtype_name(array: np.ndarray) -> str:
    if array.dtype.kind in "OUS":
        return "string"
    try:
        return tf.dtypes.as_dtype(array.dtype).name
    except TypeError:
        return str(array.dtype)


def shape_text(dims: Sequence[int]) -> str:
    return "[" + ", ".join(str(d) for d in dims) + "]"


def to_bytes_array(array: np.ndarray) -> np.ndarray:
    """Any string array (unicode, bytes, object of str/bytes) → an object array of UTF-8 bytes."""
    if array.dtype.kind == "S":
        return array.astype(object)
    flat = array.reshape(-1)
    out = np.empty(flat.shape, dtype=object)
    for i, value in enumerate(flat):
        if isinstance(value, bytes):
            out[i] = value
        elif isinstance(value, str):
            out[i] = value.encode("utf-8")
        else:
            raise TypeError(type(value).__name__)
    return out.reshape(array.shape)


def request_bytes(inputs: Mapping[str, np.ndarray]) -> int:
    """Approximate payload size: numeric bytes plus the length of every string."""
    total = 0
    for array in inputs.values():
        array = np.asarray(array)
        if array.dtype.kind == "O":
            total += sum(len(v) if isinstance(v, (bytes, str)) else 8 for v in array.reshape(-1))
        else:
            total += array.nbytes
    return total


def short_tf_message(err: tf.errors.OpError) -> str:
    """The error's own message without the graph's op stack or function names: the message lines (for an eager
    "Graph execution error:", those after its "Detected at node" stack), then the node it failed in."""
    lines = (err.message or type(err).__name__).strip().splitlines()
    body = [FUNCTION_NODE.sub("", line).strip() for line in lines
            if line.strip() and not line.startswith((" ", "\t", "Detected at node", "<stack traces unavailable>",
                                                      "Graph execution error"))]
    node = next((line.strip() for line in lines if line.strip().startswith("[[{{node ")), "")
    if not body:
        return lines[0][:MAX_ERROR_CHARS]
    message = " ".join(line for line in body if line).replace("\\'", "'")   # Assert quotes come escaped
    message += f" (in {node.split('}}]]')[0].removeprefix('[[{{')})" if node else ""
    return message[:MAX_ERROR_CHARS]


def batchable(signature: Signature, inputs: Mapping[str, np.ndarray]) -> bool:
    """Whether validated ``inputs`` can be concatenated with other requests' along their first dimension (a
    batch-major signature, and no scalar was sent: shapes are the graph's business, not the batcher's)."""
    return signature.batch_major and all(np.ndim(array) >= 1 for array in inputs.values())


class Signature:
    """A SignatureDef plus the bound Session call that runs it."""

    def __init__(self, name: str, definition: meta_graph_pb2.SignatureDef, bound: BoundSignature | None):
        self.name = name
        self.definition = definition
        self.inputs = dict(definition.inputs)
        self.outputs = dict(definition.outputs)
        self.defaults = {name: tf.make_ndarray(proto) for name, proto in definition.defaults.items()}
        self.method_name = definition.method_name
        # Every input and output has a free leading dimension: requests can be concatenated along it (batching)
        # and their inputs must agree on it.
        self.batch_major = bool(self.inputs) and all(
            self._leading_free(info) for info in (*self.inputs.values(), *self.outputs.values()))
        self._ready_defaults: dict[str, np.ndarray] = {}
        try:   # the defaults checked once; a default that does not fit its input is judged per request instead
            self._ready_defaults = {key: self._check_tensor(key, np.asarray(value), False)
                                    for key, value in self.defaults.items()}
        except ServingError:
            pass
        self.bound = bound

    @staticmethod
    def _leading_free(info: meta_graph_pb2.TensorInfo) -> bool:
        shape = info.tensor_shape
        return not shape.unknown_rank and len(shape.dim) >= 1 and shape.dim[0].size == -1

    def check_output_filter(self, output_filter: Sequence[str]) -> list[str]:
        """The outputs to return: all of them without a filter; unknown or repeated aliases are errors (TF Serving's
        rules)."""
        if not output_filter:
            return sorted(self.outputs)
        seen: set[str] = set()
        for alias in output_filter:
            if alias not in self.outputs:
                raise invalid(f"output tensor alias not found in signature: {alias} Outputs expected to be in the "
                              f"set {{{','.join(sorted(self.outputs))}}}.")
            if alias in seen:
                raise invalid(f"duplicate output tensor alias: {alias}")
            seen.add(alias)
        return list(output_filter)

    def validate(self, inputs: Mapping[str, np.ndarray], cast_numbers: bool = False) -> dict[str, np.ndarray]:
        """Checks names, dtypes and shapes; returns arrays ready for the graph (strings as bytes objects).

        ``cast_numbers`` lets numbers of another width through, converted (JSON carries no dtypes; TF Serving's REST
        API converts them to the signature's type too). gRPC tensors carry a dtype and must match exactly.
        """
        sent, wanted = set(inputs), set(self.inputs)
        missing = wanted - sent
        if sent - wanted or (missing and not self.defaults):
            raise invalid(
                f"input size does not match signature: {len(sent)}!={len(wanted)} len({{{','.join(sorted(sent))}}}) "
                f"!= len({{{','.join(sorted(wanted))}}}). Sent extra: {{{','.join(sorted(sent - wanted))}}}. "
                f"Missing but required: {{{','.join(sorted(missing))}}}.")
        unfilled = sorted(missing - set(self.defaults))
        if unfilled:
            name = unfilled[0]
            raise invalid(f"Signature input alias: {name}(feed name: {self.inputs[name].name}) not found in request "
                          f"and no default value provided. Inputs expected to be in the request "
                          f"{{{','.join(sorted(sent))}}}, or default input alias set: "
                          f"{{{','.join(sorted(self.defaults))}}}")
        given = {**{name: self.defaults[name] for name in missing}, **inputs}
        ready = {name: self._ready_defaults[name] if name in missing and name in self._ready_defaults
                 else self._check_tensor(name, np.asarray(given[name]), cast_numbers) for name in sorted(given)}
        if self.batch_major and all(array.ndim >= 1 for array in ready.values()):
            required = {name: array.shape[0] for name, array in ready.items() if name not in self.defaults}
            rows = max(required.values(), default=1)
            for name in self.defaults:   # one row of an optional input stands for every row
                if ready[name].shape[0] == 1 and rows != 1:
                    ready[name] = np.repeat(ready[name], rows, axis=0)
            counts = {name: array.shape[0] for name, array in ready.items()}
            if len(set(counts.values())) > 1:
                listed = ", ".join(f"{name} has {count}" for name, count in counts.items())
                raise invalid(f"input tensors must have equal 0th-dimension size (the batch): {listed}")
        return ready

    def _check_tensor(self, name: str, array: np.ndarray, cast_numbers: bool) -> np.ndarray:
        info = self.inputs[name]
        expected = dtype_name(info.dtype)
        got = array_dtype_name(array)
        prefix = f"input tensor '{name}' of signature '{self.name}'"
        if expected == "string":
            if got != "string":
                raise invalid(f"{prefix}: expects dtype string but {got} is provided")
            try:
                array = to_bytes_array(array)
            except TypeError as err:
                raise invalid(f"{prefix}: expects dtype string but holds a {err} value") from None
        elif got != expected:
            target = tf.dtypes.as_dtype(info.dtype)
            allowed = cast_numbers and ((target.is_floating and array.dtype.kind in "biuf")
                                        or (target.is_integer and array.dtype.kind in "biu"))
            if not allowed:
                raise invalid(f"{prefix}: expects dtype {expected} but {got} is provided")
            array = array.astype(target.as_numpy_dtype)
        return array

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Runs validated inputs through the graph; every output, as numpy (strings as bytes objects)."""
        if self.bound is None:
            raise ServingError(grpc.StatusCode.FAILED_PRECONDITION,
                               f"signature {self.name} has no graph to run in this SavedModel (a tensor it names "
                               f"is not in the MetaGraph, or is not a plain tensor)")
        try:
            return self.bound.run(inputs)
        except tf.errors.OpError as err:
            message = short_tf_message(err)
            culprit = self.explain_failure(inputs)
            if culprit:
                raise invalid(f"{culprit}; the graph failed with: {message}") from err
            raise ServingError(CODES.get(err.error_code, grpc.StatusCode.INTERNAL), message) from err
        except ShapeMisfit as err:   # the SignatureDef's shape says it in the input's own name where it can
            raise invalid(self.shape_misfit(inputs) or f"signature '{self.name}': {err}") from err
        except (TypeError, ValueError) as err:   # a value the Session cannot feed
            culprit = self.explain_failure(inputs) or f"signature '{self.name}'"
            raise invalid(f"{culprit}: {str(err).strip().splitlines()[0][:MAX_ERROR_CHARS]}") from err

    def explain_failure(self, inputs: Mapping[str, np.ndarray]) -> str | None:
        """Which input a failed graph run is most likely about: one whose shape does not fit the SignatureDef, or
        one with an empty batch or another empty dimension (None when every input fits)."""
        misfit = self.shape_misfit(inputs)
        if misfit:
            return misfit
        for name in sorted(inputs, key=lambda n: (n in self.defaults, n)):   # the inputs a client must send first
            if inputs[name] is self._ready_defaults.get(name):
                continue   # the SignatureDef's own default, not sent: an empty one (no exclusions) is no culprit
            shape = inputs[name].shape
            if shape and shape[0] == 0:
                return f"input tensor '{name}' of signature '{self.name}' has an empty batch (0 rows)"
            if 0 in shape:
                return (f"input tensor '{name}' of signature '{self.name}' has an empty dimension "
                        f"{shape.index(0)} (shape {shape_text(shape)})")
        return None

    def shape_misfit(self, inputs: Mapping[str, np.ndarray]) -> str | None:
        """The first input whose shape does not fit the SignatureDef's, in the input's own name (None when all
        fit or the SignatureDef gives no shape)."""
        for name in sorted(inputs):
            array = inputs[name]
            prefix = f"input tensor '{name}' of signature '{self.name}'"
            shape = self.inputs[name].tensor_shape
            if not shape.unknown_rank:
                dims = [d.size for d in shape.dim]
                if array.ndim != len(dims):
                    return (f"{prefix}: expects rank {len(dims)} (shape {shape_text(dims)}) but got rank "
                            f"{array.ndim} (shape {shape_text(array.shape)})")
                for axis, (want, have) in enumerate(zip(dims, array.shape)):
                    if want != -1 and want != have:
                        return (f"{prefix}: dimension {axis} must be {want} (shape {shape_text(dims)}) but got "
                                f"shape {shape_text(array.shape)}")
        return None
