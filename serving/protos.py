"""TensorProto ↔ numpy as TF Serving reads and writes them.

Why it exists: the gRPC front-end and the warm-up replay both turn a request's TensorProtos into arrays, and
TF Serving writes response tensors with ``Tensor::AsProtoField`` (typed fields such as ``float_val`` and
``string_val``), not as packed ``tensor_content``; clients that read ``outputs['y'].float_val`` (TF Serving's own
tests do) depend on it. One place does both.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, types_pb2

from serving.errors import invalid

# dtype → the typed repeated field AsProtoField fills (the 16-bit floats go in half_val as their bit patterns).
TYPED_FIELDS = {
    types_pb2.DT_FLOAT: "float_val", types_pb2.DT_DOUBLE: "double_val", types_pb2.DT_INT32: "int_val",
    types_pb2.DT_INT16: "int_val", types_pb2.DT_INT8: "int_val", types_pb2.DT_UINT8: "int_val",
    types_pb2.DT_UINT16: "int_val", types_pb2.DT_INT64: "int64_val", types_pb2.DT_UINT32: "uint32_val",
    types_pb2.DT_UINT64: "uint64_val", types_pb2.DT_BOOL: "bool_val", types_pb2.DT_STRING: "string_val",
    types_pb2.DT_HALF: "half_val", types_pb2.DT_BFLOAT16: "half_val",
}


def to_arrays(tensors: Mapping[str, tensor_pb2.TensorProto]) -> dict[str, np.ndarray]:
    """A request's input map as numpy arrays; a TensorProto that does not parse is INVALID_ARGUMENT naming it."""
    arrays = {}
    for alias, proto in tensors.items():
        try:
            arrays[alias] = tf.make_ndarray(proto)
        except Exception:  # noqa: BLE001 - malformed TensorProto (bad dtype, content size mismatch, ...)
            raise invalid(f"tensor parsing error: {alias}") from None
    return arrays


def to_tensor_proto(array: np.ndarray, as_content: bool = False) -> tensor_pb2.TensorProto:
    """An output array as TF Serving's AsProtoField writes it: dtype, shape and the typed value field; with
    ``as_content`` (--enable_serialization_as_tensor_content) numbers packed in ``tensor_content`` instead."""
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
