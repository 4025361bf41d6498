"""TensorProto ↔ numpy as TF Serving reads and writes them, without TensorFlow's generic converters on the hot path.

Why it exists: the gRPC front-end and the warm-up replay both turn a request's TensorProtos into arrays, and
TF Serving writes response tensors with ``Tensor::AsProtoField`` (typed fields such as ``float_val`` and
``string_val``), not as packed ``tensor_content``; clients that read ``outputs['y'].float_val`` (TF Serving's own
tests do) depend on it. One place does both. The common cases (strings, the fixed-width numbers, given in full
either as ``tensor_content`` or as one typed value per element) are converted directly: ``tf.make_ndarray`` and
``tf.make_tensor_proto`` walk every element in Python and cost more than the graph on a one-row request
(docs/benchmarks.md). Anything else (a typed field with fewer values than elements, which TF fills with the last
value; complex, resource or variant tensors; malformed protos) goes through TensorFlow's own converters, so the
results and errors are theirs. TensorFlow itself is imported only for those, so a client that sends and reads
the common cases (``twotower query``) never imports it (serving/tf_protos.py).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from serving.errors import invalid
from serving.tf_protos import load

tensor_pb2 = load("tensorflow.core.framework.tensor_pb2")
types_pb2 = load("tensorflow.core.framework.types_pb2")

# dtype → the typed repeated field AsProtoField fills (the 16-bit floats go in half_val as their bit patterns).
TYPED_FIELDS = {
    types_pb2.DT_FLOAT: "float_val", types_pb2.DT_DOUBLE: "double_val", types_pb2.DT_INT32: "int_val",
    types_pb2.DT_INT16: "int_val", types_pb2.DT_INT8: "int_val", types_pb2.DT_UINT8: "int_val",
    types_pb2.DT_UINT16: "int_val", types_pb2.DT_INT64: "int64_val", types_pb2.DT_UINT32: "uint32_val",
    types_pb2.DT_UINT64: "uint64_val", types_pb2.DT_BOOL: "bool_val", types_pb2.DT_STRING: "string_val",
    types_pb2.DT_HALF: "half_val", types_pb2.DT_BFLOAT16: "half_val",
}
# dtypes converted directly (numpy holds them natively; bfloat16 and the quantized types go through TensorFlow)
NUMPY_DTYPES = {
    types_pb2.DT_FLOAT: np.dtype(np.float32), types_pb2.DT_DOUBLE: np.dtype(np.float64),
    types_pb2.DT_INT32: np.dtype(np.int32), types_pb2.DT_INT16: np.dtype(np.int16),
    types_pb2.DT_INT8: np.dtype(np.int8), types_pb2.DT_UINT8: np.dtype(np.uint8),
    types_pb2.DT_UINT16: np.dtype(np.uint16), types_pb2.DT_INT64: np.dtype(np.int64),
    types_pb2.DT_UINT32: np.dtype(np.uint32), types_pb2.DT_UINT64: np.dtype(np.uint64),
    types_pb2.DT_BOOL: np.dtype(np.bool_),
}
DTYPE_ENUMS = {dtype: enum for enum, dtype in NUMPY_DTYPES.items()}


def to_array(proto: tensor_pb2.TensorProto) -> np.ndarray:
    """One TensorProto as numpy, exactly as ``tf.make_ndarray`` reads it (strings as an object array of bytes)."""
    shape = [dim.size for dim in proto.tensor_shape.dim]
    count = math.prod(shape)
    if proto.tensor_content and proto.dtype not in NUMPY_DTYPES:
        pass   # strings are never packed; TensorFlow's reading refuses it
    elif proto.dtype == types_pb2.DT_STRING:
        values = proto.string_val
        if len(values) == count and min(shape, default=0) >= 0:
            array = np.empty(count, dtype=object)
            array[:] = values
            return array.reshape(shape)
    elif proto.dtype in NUMPY_DTYPES and min(shape, default=0) >= 0:
        dtype = NUMPY_DTYPES[proto.dtype]
        if proto.tensor_content:
            if len(proto.tensor_content) == count * dtype.itemsize:
                return np.frombuffer(proto.tensor_content, dtype=dtype).copy().reshape(shape)
        else:
            values = getattr(proto, TYPED_FIELDS[proto.dtype])
            if len(values) == count:
                return np.array(values, dtype=dtype).reshape(shape)
    # the general case, TensorFlow's own reading (and its errors)
    import tensorflow as tf

    return tf.make_ndarray(proto)


def to_arrays(tensors: Mapping[str, tensor_pb2.TensorProto]) -> dict[str, np.ndarray]:
    """A request's input map as numpy arrays; a TensorProto that does not parse is INVALID_ARGUMENT naming it."""
    arrays = {}
    for alias, proto in tensors.items():
        try:
            arrays[alias] = to_array(proto)
        except Exception:  # noqa: BLE001 - malformed TensorProto (bad dtype, content size mismatch, ...)
            raise invalid(f"tensor parsing error: {alias}") from None
    return arrays


def set_shape(proto: tensor_pb2.TensorProto, shape: tuple[int, ...]) -> None:
    proto.tensor_shape.SetInParent()   # written even for a scalar, as make_tensor_proto does
    for size in shape:
        proto.tensor_shape.dim.add().size = size


def fill_tensor_proto(proto: tensor_pb2.TensorProto, array: np.ndarray, as_content: bool = False) -> None:
    """Writes an output array into ``proto`` (a fresh one, e.g. ``response.outputs[alias]``) as TF Serving's
    AsProtoField writes it: dtype, shape and the typed value field; with ``as_content``
    (--enable_serialization_as_tensor_content) numbers packed in ``tensor_content`` instead."""
    array = np.asarray(array)
    if as_content:   # rare (a flag): TensorFlow's converter decides what is packed, as before
        proto.CopyFrom(to_tensor_proto(array, as_content))
        return
    if array.dtype == object and all(isinstance(value, bytes) for value in array.flat):
        proto.dtype = types_pb2.DT_STRING
        set_shape(proto, array.shape)
        proto.string_val.extend(array.flat)
        return
    enum = DTYPE_ENUMS.get(array.dtype)
    if enum is None:   # unicode, half, complex, mixed objects...: TensorFlow's converter, then the typed field
        proto.CopyFrom(to_tensor_proto(array))
        return
    proto.dtype = enum
    set_shape(proto, array.shape)
    getattr(proto, TYPED_FIELDS[enum]).extend(array.reshape(-1).tolist())


def to_tensor_proto(array: np.ndarray, as_content: bool = False) -> tensor_pb2.TensorProto:
    """An array as a TensorProto through ``tf.make_tensor_proto``, with the typed value field as AsProtoField
    writes it (``fill_tensor_proto`` is the direct path for the common dtypes)."""
    import tensorflow as tf

    array = np.asarray(array)
    proto = tf.make_tensor_proto(array)
    field = TYPED_FIELDS.get(proto.dtype)
    if field is None or not proto.tensor_content or as_content:
        return proto
    proto.tensor_content = b""
    flat = array.reshape(-1)
    if proto.dtype in (types_pb2.DT_HALF, types_pb2.DT_BFLOAT16):
        flat = flat.view(np.uint16)
    getattr(proto, field).extend(flat.tolist())
    return proto
