"""The gRPC front-end: ``tensorflow.serving.PredictionService`` and ``ModelService``, wire-compatible with TF Serving.

Why it exists: clients written against TF Serving (its official stubs, any language) must work unchanged. This
module only translates: TensorProtos to numpy and back (``tf.make_ndarray`` / ``tf.make_tensor_proto``), the
request's ModelSpec and deadline to ``ModelServer`` arguments, and ``ServingError`` to a gRPC status. Classify,
Regress and MultiInference answer as TF Serving does for models whose signatures are all predict signatures.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable

import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2, get_model_status_pb2,
                                     inference_pb2, model_management_pb2, model_service_pb2_grpc, predict_pb2,
                                     prediction_service_pb2_grpc, regression_pb2)
from tensorflow_serving.config import model_server_config_pb2
from tensorflow_serving.apis import status_pb2

from serving import config as model_config
from serving.core import ModelServer, deadline_after
from serving.errors import ServingError, invalid

log = logging.getLogger("twotower.serving")
CLASSIFY = "tensorflow/serving/classify"
REGRESS = "tensorflow/serving/regress"
DEFAULT_SIGNATURE = "serving_default"
STATES = get_model_status_pb2.ModelVersionStatus.State


def answers_errors(method: Callable) -> Callable:
    """Turns ``ServingError`` into the RPC's status and anything unexpected into INTERNAL (traceback logged)."""

    @functools.wraps(method)
    def wrapper(self, request, context: grpc.ServicerContext):
        try:
            return method(self, request, context)
        except ServingError as err:
            context.abort(err.code, err.message)
        except Exception as err:  # noqa: BLE001 - a client never sees a traceback
            log.exception("%s failed", method.__name__)
            context.abort(grpc.StatusCode.INTERNAL, f"internal error in {method.__name__}: {type(err).__name__}")

    return wrapper


def spec_fields(spec) -> tuple[str, int | None, str | None]:
    """(name, version, label) from a ModelSpec; an unset version or label is None."""
    version = spec.version.value if spec.HasField("version") else None
    return spec.name, version, spec.version_label or None


def deadline_of(context: grpc.ServicerContext) -> float | None:
    return deadline_after(context.time_remaining())


def to_arrays(tensors) -> dict[str, np.ndarray]:
    arrays = {}
    for alias, proto in tensors.items():
        try:
            arrays[alias] = tf.make_ndarray(proto)
        except Exception:  # noqa: BLE001 - malformed TensorProto (bad dtype, content size mismatch, ...)
            raise invalid(f"tensor parsing error: {alias}") from None
    return arrays


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    """Predict and GetModelMetadata on ``ModelServer``; the Example-based methods as TF Serving refuses them."""

    def __init__(self, core: ModelServer):
        self.core = core

    @answers_errors
    def Predict(self, request: predict_pb2.PredictRequest, context) -> predict_pb2.PredictResponse:
        name, version, label = spec_fields(request.model_spec)
        signature = request.model_spec.signature_name or DEFAULT_SIGNATURE
        served, outputs = self.core.predict(name, version, label, signature, to_arrays(request.inputs),
                                            list(request.output_filter), deadline_of(context), protocol="grpc")
        response = predict_pb2.PredictResponse()
        response.model_spec.name = name
        response.model_spec.version.value = served
        response.model_spec.signature_name = signature
        for alias, array in outputs.items():
            response.outputs[alias].CopyFrom(tf.make_tensor_proto(array))
        return response

    @answers_errors
    def GetModelMetadata(self, request: get_model_metadata_pb2.GetModelMetadataRequest, context
                         ) -> get_model_metadata_pb2.GetModelMetadataResponse:
        if not request.metadata_field:
            raise invalid("GetModelMetadataRequest must specify at least one metadata_field")
        for field in request.metadata_field:
            if field != "signature_def":
                raise invalid(f"Metadata field {field} is not supported")
        name, version, label = spec_fields(request.model_spec)
        served, defs = self.core.signature_defs(name, version, label)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = name
        response.model_spec.version.value = served
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        for key, definition in defs.items():
            signature_map.signature_def[key].CopyFrom(definition)
        response.metadata["signature_def"].Pack(signature_map)
        return response

    def _signature_method(self, spec, not_found: Callable[[str], str]) -> str:
        name, version, label = spec_fields(spec)
        signature = spec.signature_name or DEFAULT_SIGNATURE
        _, defs = self.core.signature_defs(name, version, label)
        if signature not in defs:
            raise invalid(not_found(signature))
        return defs[signature].method_name

    def _refuse_examples(self, spec, wanted: str, kind: str) -> None:
        method = self._signature_method(spec, lambda s: f"No signature was found with the name: {s}")
        if method != wanted:
            raise invalid(f"Expected {kind} signature method_name to be {wanted}. Was: {method}")
        raise ServingError(grpc.StatusCode.UNIMPLEMENTED, f"{kind} on tf.Example input is not supported by this "
                           "server; use Predict")

    @answers_errors
    def Classify(self, request: classification_pb2.ClassificationRequest, context):
        self._refuse_examples(request.model_spec, CLASSIFY, "classification")

    @answers_errors
    def Regress(self, request: regression_pb2.RegressionRequest, context):
        self._refuse_examples(request.model_spec, REGRESS, "regression")

    @answers_errors
    def MultiInference(self, request: inference_pb2.MultiInferenceRequest, context):
        if not request.tasks:
            raise invalid("Expected at least one task")
        names = {task.model_spec.name for task in request.tasks}
        if len(names) > 1:
            raise invalid("All ModelSpecs in a MultiInferenceRequest must access the same model name.")
        seen: set[str] = set()
        for task in request.tasks:
            signature = task.model_spec.signature_name or DEFAULT_SIGNATURE
            if signature in seen:
                raise invalid(f"Duplicate evaluation of signature: {signature}")
            seen.add(signature)
            method = self._signature_method(task.model_spec,
                                            lambda s: f"Requested signature not found in model graph: {s}")
            if task.method_name == CLASSIFY:
                kind = "classification"
            elif task.method_name == REGRESS:
                kind = "regression"
            else:
                raise ServingError(grpc.StatusCode.UNIMPLEMENTED,
                                   f"Unsupported signature method_name: {task.method_name}")
            if method != task.method_name:
                raise invalid(f"Expected {kind} signature method_name to be {task.method_name}. Was: {method}")
        raise ServingError(grpc.StatusCode.UNIMPLEMENTED, "MultiInference on tf.Example input is not supported by "
                           "this server; use Predict")


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    """GetModelStatus and HandleReloadConfigRequest on ``ModelServer``."""

    def __init__(self, core: ModelServer):
        self.core = core

    @answers_errors
    def GetModelStatus(self, request: get_model_status_pb2.GetModelStatusRequest, context
                       ) -> get_model_status_pb2.GetModelStatusResponse:
        name, version, label = spec_fields(request.model_spec)
        response = get_model_status_pb2.GetModelStatusResponse()
        for status in self.core.status(name, version, label):
            entry = response.model_version_status.add()
            entry.version = status.version
            entry.state = STATES.Value(status.state)
            entry.status.error_code = status.error_code.value[0]
            entry.status.error_message = status.error_message
        return response

    @answers_errors
    def HandleReloadConfigRequest(self, request: model_management_pb2.ReloadConfigRequest, context
                                  ) -> model_management_pb2.ReloadConfigResponse:
        started = time.monotonic()
        configs = model_config.from_proto(request.config if request.HasField("config")
                                          else model_server_config_pb2.ModelServerConfig())
        self.core.reload_config(configs)
        log.info("config reloaded in %.2fs: %s", time.monotonic() - started, [c.name for c in configs])
        return model_management_pb2.ReloadConfigResponse(status=status_pb2.StatusProto(error_code=0))
