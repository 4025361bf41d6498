"""JSON ↔ tensors for the REST API, in TF Serving's formats and with its error messages.

Why it exists: a REST client written for TF Serving sends ``{"instances": [...]}`` (row format) or
``{"inputs": {...}}`` (columnar format), may send strings as ``{"b64": "..."}``, and expects ``predictions`` or
``outputs`` back in the matching shape. This module mirrors tensorflow_serving/util/json_tensor.cc: the same
parsing rules (dense tensors only, types from the signature's TensorInfo, lossless numbers) and the same
INVALID_ARGUMENT messages, so a client cannot tell the two servers apart. It knows nothing about HTTP.
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
from tensorflow.core.example import example_pb2
from tensorflow_serving.apis import classification_pb2, input_pb2, regression_pb2

from serving.errors import ServingError, invalid

B64 = "b64"
BYTES_SUFFIX = "_bytes"  # string outputs named like this go back base64-encoded, as TF Serving does
MAX_SHOWN = 300           # characters of an offending JSON value quoted in an error message
MAX_RANK = 64             # deepest list nesting read as a tensor (numpy's limit; TF allows 254, no model needs it)


class Format(enum.Enum):
    ROW = "instances"      # request key; answered under "predictions"
    COLUMNAR = "inputs"    # request key; answered under "outputs"


@dataclass(frozen=True)
class DType:
    """How one TensorFlow dtype is read from JSON and held in numpy."""

    name: str              # DataTypeString(), as TF Serving's messages spell it
    numpy: Any
    accepts: Callable[[Any], bool]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int_range(bits: int, signed: bool = True) -> Callable[[Any], bool]:
    low, high = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    return lambda value: _is_int(value) and low <= value <= high


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# TensorFlow's DataType enum values (tensorflow/core/framework/types.proto).
DTYPES: dict[int, DType] = {
    1: DType("float", np.float32, _is_number),
    2: DType("double", np.float64, _is_number),
    3: DType("int32", np.int32, _int_range(32)),
    4: DType("uint8", np.uint8, _int_range(8, signed=False)),   # out of range: a type error, not a wrap-around
    5: DType("int16", np.int16, _int_range(16)),
    6: DType("int8", np.int8, _int_range(8)),
    7: DType("string", object, lambda value: isinstance(value, str)),
    9: DType("int64", np.int64, _int_range(64)),
    10: DType("bool", np.bool_, lambda value: isinstance(value, bool)),
    22: DType("uint32", np.uint32, _int_range(32, signed=False)),
    23: DType("uint64", np.uint64, _int_range(64, signed=False)),
}
STRING = 7
FLOAT_MAX_INT = {1: (1 << 24) - 1, 2: (1 << 53) - 1}
FLOAT_LIMIT = {1: float(np.finfo(np.float32).max), 2: float(np.finfo(np.float64).max)}


def dtype_of(enum_value: int) -> DType:
    if enum_value not in DTYPES:
        raise ServingError(grpc.StatusCode.UNIMPLEMENTED,
                           f"Conversion of JSON values to type enum {enum_value} is not supported")
    return DTYPES[enum_value]


# ---------------------------------------------------------------------------------------------------------------
# Parsing


def show(value: Any) -> str:
    """A JSON value as TF Serving quotes it in messages (pretty-printed), cut short when long."""
    try:
        text = json.dumps(value, indent=4, ensure_ascii=False, allow_nan=True)
    except RecursionError:
        return "(a value nested too deeply to show)"
    return text if len(text) <= MAX_SHOWN else text[:MAX_SHOWN] + "...(truncated)"


def json_type(value: Any) -> str:
    if value is None:
        return "Null"
    if value is True:
        return "True"
    if value is False:
        return "False"
    if isinstance(value, dict):
        return "Object"
    if isinstance(value, list):
        return "Array"
    if isinstance(value, str):
        return "String"
    return "Number"


def _constant(name: str) -> float:
    return {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}[name]


def _finite_float(text: str) -> float:
    """A JSON number; one too large for a double is a parse error (rapidjson's), not silently infinity."""
    value = float(text)
    if math.isinf(value):
        raise invalid(f"JSON Parse error: Number too big to be stored in double: {text[:40]}")
    return value


def parse_document(body: bytes) -> dict:
    """The request body as a JSON object (NaN and Infinity allowed, as rapidjson's kParseNanAndInfFlag does)."""
    if not body.strip():
        raise invalid("JSON Parse error: The document is empty")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as err:
        raise invalid(f"JSON Parse error: Invalid encoding in string. at offset: {err.start}") from None
    try:
        doc = json.loads(text, parse_constant=_constant, parse_float=_finite_float)
    except json.JSONDecodeError as err:
        raise invalid(f"JSON Parse error: {err.msg} at offset: {err.pos}") from None
    except RecursionError:
        raise invalid("JSON Parse error: The document is nested too deeply") from None
    if not isinstance(doc, dict):
        raise invalid(f"JSON Value: {show(doc)} Is not object")
    return doc


def signature_name(doc: dict) -> str:
    """The optional ``signature_name`` key ("" when absent, which means serving_default)."""
    name = doc.get("signature_name", "")
    if not isinstance(name, str):
        raise invalid(f"JSON Value: {show(doc)} not formatted correctly. 'signature_name' key must be a string "
                      "value.")
    return name


def is_b64(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get(B64), str)


def _decode_b64(value: Any) -> bytes:
    if not is_b64(value):
        raise invalid(f"JSON Value: {show(value)} not formatted correctly for base64 data")
    text = value[B64]
    try:  # absl::Base64Unescape accepts standard and web-safe alphabets, padded or not
        padded = text + "=" * (-len(text) % 4)
        return base64.b64decode(padded.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        raise invalid("Unable to base64 decode") from None


def dense_shape(value: Any) -> list[int]:
    """Shape guessed from the first element at every level (GetDenseTensorShape); checked by ``_fill``."""
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return shape


def _add_value(value: Any, dtype_enum: int, out: list) -> None:
    dtype = dtype_of(dtype_enum)
    if isinstance(value, dict):
        if dtype_enum != STRING:
            raise _type_error(value, dtype)
        out.append(_decode_b64(value))
        return
    if not dtype.accepts(value):
        raise _type_error(value, dtype)
    if dtype_enum in FLOAT_MAX_INT and not _lossless(value, dtype_enum):
        raise invalid(f"Cannot convert JSON value: {show(value)} to {dtype.name} without loss of precision.")
    out.append(value.encode("utf-8") if dtype_enum == STRING else value)


def _lossless(value: int | float, dtype_enum: int) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value) or abs(value) <= FLOAT_LIMIT[dtype_enum]
    return abs(value) <= FLOAT_MAX_INT[dtype_enum]


def _type_error(value: Any, dtype: DType) -> ServingError:
    return invalid(f"JSON Value: {show(value)} Type: {json_type(value)} is not of expected type: {dtype.name}")


def _fill(value: Any, level: int, shape: list[int], dtype_enum: int, out: list) -> None:
    """Appends the leaves of ``value`` to ``out``, checking it is dense with ``shape`` (FillTensorProto)."""
    rank = len(shape)
    if not isinstance(value, list):
        if level != rank:
            raise invalid(f"JSON Value: {show(value)} found at incorrect level: {level + 1} in the JSON DOM. "
                          f"Expected at level: {rank}")
        _add_value(value, dtype_enum, out)
        return
    if level >= rank:
        raise invalid(f"Encountered list at unexpected level: {level} expected < {rank}")
    if len(value) != shape[level]:
        raise invalid(f"Encountered list at unexpected size: {len(value)} at level: {level} expected size: "
                      f"{shape[level]}")
    for item in value:
        _fill(item, level + 1, shape, dtype_enum, out)


def to_array(values: list, shape: list[int], dtype_enum: int) -> np.ndarray:
    dtype = dtype_of(dtype_enum)
    if dtype.numpy is object:
        array = np.empty(len(values), dtype=object)
        array[:] = values
    else:
        array = np.asarray(values, dtype=dtype.numpy)
    return array.reshape(shape)


def _tensor(value: Any, dtype_enum: int) -> tuple[list, list[int]]:
    shape = dense_shape(value)
    if len(shape) > MAX_RANK:
        raise invalid(f"JSON lists nested {len(shape)} levels deep: a tensor has at most {MAX_RANK} dimensions here")
    values: list = []
    _fill(value, 0, shape, dtype_enum, values)
    return values, shape


def _shape_text(shape: list[int]) -> str:
    return "[" + ",".join(map(str, shape)) + "]"


def _inputs_from_instances(instances: list, dtypes: Mapping[str, int],
                           optional: frozenset[str] = frozenset()) -> dict[str, np.ndarray]:
    """Row format: one element per batch row, an object of named inputs (or a bare value for one input). Inputs
    in ``optional`` (they have a default) may be left out, by every row alike."""
    if not isinstance(instances[0], dict) and len(dtypes) > 1:
        raise invalid("instances is a plain list, but expecting list of objects as multiple input tensors "
                      "required as per tensorinfo_map")
    named = isinstance(instances[0], dict) and not is_b64(instances[0])
    names = sorted(dtypes)
    values: dict[str, list] = {}
    shapes: dict[str, list[int]] = {}

    def add(item: Any, name: str) -> None:
        if name not in dtypes:
            raise invalid(f"JSON object: does not have named input: {name}")
        flat, shape = _tensor(item, dtypes[name])
        if name not in shapes:
            shapes[name], values[name] = shape, flat
            return
        size = int(np.prod(shapes[name], dtype=np.int64))
        if size != len(flat):
            raise invalid(f"Expecting tensor size: {size} but got: {len(flat)}")
        if shape != shapes[name]:
            raise invalid(f"Expecting shape {_shape_text(shapes[name])} but got: {_shape_text(shape)}")
        values[name].extend(flat)

    for row, element in enumerate(instances):
        element_named = isinstance(element, dict) and not is_b64(element)
        if named:
            if not element_named:
                raise invalid(f"Expecting object but got list at item {row} of input list")
            for name, item in element.items():
                try:
                    add(item, name)
                except ServingError as err:
                    raise invalid(f"Failed to process element: {row} key: {name} of 'instances' list. Error: "
                                  f"INVALID_ARGUMENT: {err.message}") from None
            first = instances[0] if row else element
            if not set(names) - optional <= set(element) <= set(names) or set(element) != set(first):
                required = ",".join(sorted(set(names) - optional))
                allowed = f" (and optionally: {','.join(sorted(optional))}, in every row alike)" if optional else ""
                raise invalid(f"Failed to process element: {row} of 'instances' list. JSON object: "
                              f"{show(element)} must only have keys: {required}{allowed}")
        else:
            if element_named:
                raise invalid(f"Expecting value/list but got object at item {row} of input list")
            try:
                add(element, names[0])
            except ServingError as err:
                raise invalid(f"Failed to process element: {row} of 'instances' list. Error: INVALID_ARGUMENT: "
                              f"{err.message}") from None
    return {name: to_array(values[name], [len(instances), *shapes[name]], dtypes[name]) for name in values}


def _inputs_from_columns(inputs: Any, dtypes: Mapping[str, int],
                         optional: frozenset[str] = frozenset()) -> dict[str, np.ndarray]:
    """Columnar format: one (batched) value per named input, or a bare value for one input. Inputs in ``optional``
    (they have a default) may be left out."""
    if not isinstance(inputs, dict) or is_b64(inputs):
        if len(dtypes) > 1:
            raise invalid("inputs is a plain value/list, but expecting an object as multiple input tensors "
                          "required as per tensorinfo_map")
        (name, dtype_enum), = dtypes.items()
        values, shape = _tensor(inputs, dtype_enum)
        return {name: to_array(values, shape, dtype_enum)}
    arrays = {}
    for name in sorted(dtypes):
        if name not in inputs:
            if name in optional:
                continue
            raise invalid(f"Missing named input: {name} in 'inputs' object.")
        values, shape = _tensor(inputs[name], dtypes[name])
        arrays[name] = to_array(values, shape, dtypes[name])
    return arrays


def predict_inputs(doc: dict, dtypes: Mapping[str, int],
                   optional: frozenset[str] = frozenset()) -> tuple[dict[str, np.ndarray], Format]:
    """Tensors of a predict request (FillPredictRequestFromJson), given the signature's input dtypes. Inputs in
    ``optional`` (the SignatureDef has a default for them) may be left out; TF Serving's own REST parser
    (util/json_tensor.cc) still requires every input, its gRPC Predict fills defaults in."""
    if not dtypes:
        raise invalid(f"Failed to get input map for signature: {signature_name(doc) or 'DEFAULT'}")
    has_rows, has_columns = Format.ROW.value in doc, Format.COLUMNAR.value in doc
    if has_rows and has_columns:
        raise invalid(f"JSON Value: {show(doc)} Not formatted correctly expecting only one of 'inputs' or "
                      "'instances' keys to exist ")
    if has_rows:
        instances = doc[Format.ROW.value]
        if not isinstance(instances, list):
            raise invalid(f"JSON Value: {show(doc)} Excepting 'instances' to be an list/array")
        if not instances:
            raise invalid(f"JSON Value: {show(doc)} No values in 'instances' array")
        return _inputs_from_instances(instances, dtypes, optional), Format.ROW
    if has_columns:
        return _inputs_from_columns(doc[Format.COLUMNAR.value], dtypes, optional), Format.COLUMNAR
    raise invalid("Missing 'inputs' or 'instances' key")


def examples_input(doc: dict, method: str) -> input_pb2.Input:
    """The ``examples`` (and optional ``context``) of a classify/regress request as an Input of tf.Examples
    (FillClassificationRequestFromJson): per feature a value or a list of values, all strings (or ``{"b64": ...}``)
    → bytes_list, all integers → int64_list, numbers with a fraction → float_list."""
    examples = doc.get("examples")
    if examples is None:
        raise invalid(f"JSON Value: {show(doc)} When method is {method}, key 'examples' is expected and was not "
                      "found")
    if not isinstance(examples, list):
        raise invalid(f"JSON Value: {show(doc)} Expecting 'examples' value to be an list/array")
    if not examples:
        raise invalid(f"JSON Value: {show(doc)} 'examples' value is an empty array")
    request_input = input_pb2.Input()
    if "context" in doc:
        listed = request_input.example_list_with_context
        _fill_example(doc["context"], listed.context)
    else:
        listed = request_input.example_list
    for example in examples:
        _fill_example(example, listed.examples.add())
    return request_input


def _fill_example(value: Any, example: example_pb2.Example) -> None:
    if not isinstance(value, dict):
        raise invalid(f"Example must be JSON object but got JSON {json_type(value)}")
    for name, feature_value in value.items():
        items = feature_value if isinstance(feature_value, list) else [feature_value]
        feature = example.features.feature[name]
        if all(isinstance(item, str) or is_b64(item) for item in items) and items:
            feature.bytes_list.value.extend(_decode_b64(item) if is_b64(item) else item.encode("utf-8")
                                            for item in items)
        elif all(_is_int(item) for item in items) and items:
            if not all(-(1 << 63) <= item < (1 << 63) for item in items):
                raise invalid(f"Example feature: {name} has an integer out of the int64 range")
            feature.int64_list.value.extend(items)
        elif all(_is_number(item) for item in items) and items:
            feature.float_list.value.extend(float(item) for item in items)
        else:
            raise invalid(f"Example feature: {name} must be a string, a number, a {{\"b64\": ...}} object or a "
                          f"non-empty list of one of them (not mixed); got {show(feature_value)}")


def classify_response(result: classification_pb2.ClassificationResult) -> dict:
    """``{"results": [[[label, score], ...], ...]}`` (MakeJsonFromClassificationResult)."""
    return {"results": [[[entry.label, _float32(entry.score)] for entry in classification.classes]
                        for classification in result.classifications]}


def regress_response(result: regression_pb2.RegressionResult) -> dict:
    """``{"results": [value, ...]}`` (MakeJsonFromRegressionResult)."""
    return {"results": [_float32(regression.value) for regression in result.regressions]}


def _float32(value: float) -> float:
    """A float32 written at its shortest round trip ("3.5", not 3.5000000001), as TF Serving writes it."""
    return float(str(np.float32(value)))


# ---------------------------------------------------------------------------------------------------------------
# Writing


def _json_values(name: str, array: np.ndarray) -> Any:
    """An output tensor as nested lists of JSON-ready values (float32 written at its shortest round trip)."""
    if array.dtype == object or array.dtype.kind in "SU":
        as_b64 = name.endswith(BYTES_SUFFIX)
        flat = [_string_value(v, as_b64) for v in array.reshape(-1).tolist()]
        return np.array(flat, dtype=object).reshape(array.shape).tolist() if array.ndim else flat[0]
    if array.dtype == np.float32:  # "0.2", not 0.20000000298023224, as TF Serving's WriteDecimal does
        return array.astype(str).astype(np.float64).tolist()
    return array.tolist()


def _string_value(value: Any, as_b64: bool) -> Any:
    raw = value if isinstance(value, bytes) else str(value).encode("utf-8")
    if as_b64:
        return {B64: base64.b64encode(raw).decode("ascii")}
    return raw.decode("utf-8", errors="replace")


def predict_response(outputs: Mapping[str, np.ndarray], fmt: Format) -> dict:
    """``{"predictions": [...]}`` or ``{"outputs": ...}`` (MakeJsonFromTensors)."""
    if not outputs:
        raise invalid("Cannot convert empty tensor map to JSON")
    names = sorted(outputs)
    if fmt is Format.COLUMNAR:
        values = {name: _json_values(name, np.asarray(outputs[name])) for name in names}
        return {"outputs": values if len(names) > 1 else values[names[0]]}
    batch = 0
    for name in names:
        array = np.asarray(outputs[name])
        if array.ndim == 0:
            raise invalid(f"Tensor name: {name} has no shape information ")
        if array.shape[0] < 1:
            raise invalid(f"Tensor name: {name} has invalid batch size: {array.shape[0]}")
        if batch and array.shape[0] != batch:
            raise invalid(f"Tensor name: {name} has inconsistent batch size: {array.shape[0]} expecting: {batch}")
        batch = array.shape[0]
    columns = {name: _json_values(name, np.asarray(outputs[name])) for name in names}
    if len(names) == 1:
        return {"predictions": columns[names[0]]}
    return {"predictions": [{name: columns[name][row] for name in names} for row in range(batch)]}


def dumps(document: Any) -> bytes:
    """JSON text of a response; NaN and Infinity written bare, as TF Serving writes them."""
    return json.dumps(document, ensure_ascii=False, allow_nan=True, separators=(",", ":")).encode("utf-8")
