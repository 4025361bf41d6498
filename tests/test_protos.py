"""serving/protos.py's direct TensorProto ↔ numpy paths give exactly what TensorFlow's converters give: the same
serialized response tensors (typed fields, as TF Serving's AsProtoField writes them) and the same arrays from any
request tensor, including those the direct path hands back to TensorFlow (short typed fields, bad content)."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, types_pb2

from serving import protos
from serving.errors import ServingError

ARRAYS = [
    np.array([[b"a", b"bc"]], dtype=object), np.array(b"x", dtype=object), np.zeros((0, 3), dtype=object),
    np.arange(6, dtype=np.float32).reshape(2, 3), np.array(3.5, np.float32), np.array([True, False]),
    np.arange(4, dtype=np.int64), np.arange(3, dtype=np.uint8), np.array([1.5], np.float16), np.array(["a", "é"]),
    np.zeros((2, 0), np.float32), np.array([1, 2], np.uint64), np.array([np.nan, -0.0, 1e-45], np.float32),
    np.arange(3, dtype=np.int16), np.array([b"a", "b"], dtype=object), np.array([1.5, 2.5]),
]


def same(a: np.ndarray, b: np.ndarray) -> bool:
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    return a.tolist() == b.tolist() if a.dtype == object else a.tobytes() == b.tobytes()


@pytest.mark.parametrize("array", ARRAYS, ids=lambda a: f"{a.dtype}{list(a.shape)}")
def test_direct_paths_match_tensorflow(array):
    direct = tensor_pb2.TensorProto()
    protos.fill_tensor_proto(direct, array)
    assert direct.SerializeToString() == protos.to_tensor_proto(array).SerializeToString()
    for proto in (direct, tf.make_tensor_proto(array)):   # typed fields, and tensor_content
        assert same(protos.to_array(proto), tf.make_ndarray(proto))


def test_short_typed_fields_are_filled_as_tensorflow_does():
    floats = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, float_val=[2.0])
    floats.tensor_shape.dim.add(size=3)
    strings = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, string_val=[b"a", b"b"])
    strings.tensor_shape.dim.add(size=3)
    assert protos.to_array(floats).tolist() == [2.0, 2.0, 2.0]
    assert protos.to_array(strings).tolist() == [b"a", b"b", b"b"]


@pytest.mark.parametrize("dtype,content", [(types_pb2.DT_FLOAT, b"abc"), (types_pb2.DT_STRING, b"abc")])
def test_bad_tensor_content_is_a_parsing_error_naming_the_input(dtype, content):
    proto = tensor_pb2.TensorProto(dtype=dtype, tensor_content=content)
    proto.tensor_shape.dim.add(size=3)
    with pytest.raises(ServingError) as error:
        protos.to_arrays({"x": proto})
    assert error.value.message == "tensor parsing error: x"
