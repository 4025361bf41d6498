"""The gRPC front-end: ``tensorflow.serving.PredictionService`` and ``ModelService``, wire-compatible with TF Serving.

Why it exists: clients written against TF Serving (its official stubs, any language) must work unchanged. This
module only translates: TensorProtos to numpy and back (``serving/protos.py``, typed fields as TF Serving
writes them), tf.Example inputs to serialized examples (``serving/examples.py``), the request's ModelSpec and
deadline to ``ModelServer`` arguments, and ``ServingError`` to a gRPC status.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable

import grpc
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
    status_pb2,
)
from tensorflow_serving.config import model_server_config_pb2

from serving import DEFAULT_SIGNATURE, examples, protos
from serving import config as model_config
from serving.core import ModelServer, deadline_after
from serving.errors import ServingError, invalid

log = logging.getLogger("twotower.serving")
STATES = get_model_status_pb2.ModelVersionStatus.State


def answers_errors(method: Callable) -> Callable:
    """Turns ``ServingError`` into the RPC's status and anything unexpected into INTERNAL (traceback logged)."""

    @functools.wraps(method)
    def wrapper(self, request, context: grpc.ServicerContext):
        try:
            return method(self, request, context)
        except ServingError as err:
            context.abort(err.code, err.message)
        except Exception as err:
            log.exception("%s failed", method.__name__)
            context.abort(grpc.StatusCode.INTERNAL, f"internal error in {method.__name__}: {type(err).__name__}")

    return wrapper


def spec_fields(spec) -> tuple[str, int | None, str | None]:
    """(name, version, label) from a ModelSpec; an unset version or label is None."""
    version = spec.version.value if spec.HasField("version") else None
    return spec.name, version, spec.version_label or None


def set_spec(spec, name: str, version: int, signature: str) -> None:
    """A response's ModelSpec: the model, the version that answered, the signature (default filled in)."""
    spec.name = name
    spec.version.value = version
    spec.signature_name = signature


def deadline_of(context: grpc.ServicerContext) -> float | None:
    return deadline_after(context.time_remaining())


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    """Predict, GetModelMetadata, and the tf.Example methods (Classify, Regress, MultiInference) on ``ModelServer``."""

    def __init__(self, core: ModelServer, tensor_content: bool = False):
        self.core = core
        self.tensor_content = tensor_content   # --enable_serialization_as_tensor_content

    @answers_errors
    def Predict(self, request: predict_pb2.PredictRequest, context) -> predict_pb2.PredictResponse:
        name, version, label = spec_fields(request.model_spec)
        signature = request.model_spec.signature_name or DEFAULT_SIGNATURE
        served, outputs = self.core.predict(name, version, label, signature, protos.to_arrays(request.inputs),
                                            list(request.output_filter), deadline_of(context), protocol="grpc")
        response = predict_pb2.PredictResponse()
        set_spec(response.model_spec, name, served, signature)
        for alias, array in outputs.items():
            protos.fill_tensor_proto(response.outputs[alias], array, self.tensor_content)
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

    def _examples(self, request, context, method: str, response):
        name, version, label = spec_fields(request.model_spec)
        signature = request.model_spec.signature_name or DEFAULT_SIGNATURE
        served, (result,) = self.core.infer(name, version, label, [(signature, method)],
                                            lambda: examples.serialized_examples(request.input), deadline_of(context),
                                            protocol="grpc")
        set_spec(response.model_spec, name, served, signature)
        response.result.CopyFrom(result)
        return response

    @answers_errors
    def Classify(self, request: classification_pb2.ClassificationRequest, context
                 ) -> classification_pb2.ClassificationResponse:
        return self._examples(request, context, examples.CLASSIFY, classification_pb2.ClassificationResponse())

    @answers_errors
    def Regress(self, request: regression_pb2.RegressionRequest, context) -> regression_pb2.RegressionResponse:
        return self._examples(request, context, examples.REGRESS, regression_pb2.RegressionResponse())

    @answers_errors
    def MultiInference(self, request: inference_pb2.MultiInferenceRequest, context
                       ) -> inference_pb2.MultiInferenceResponse:
        tasks = list(request.tasks)
        signatures = [t.model_spec.signature_name or DEFAULT_SIGNATURE for t in tasks]
        examples.check_tasks([t.model_spec.name for t in tasks], signatures, [t.method_name for t in tasks])
        name, version, label = spec_fields(tasks[0].model_spec)
        served, results = self.core.infer(name, version, label,
                                          [(s, t.method_name) for s, t in zip(signatures, tasks)],
                                          lambda: examples.serialized_examples(request.input), deadline_of(context),
                                          protocol="grpc", missing="Requested signature not found in model graph: ")
        response = inference_pb2.MultiInferenceResponse()
        for signature, result in zip(signatures, results):
            entry = response.results.add()
            set_spec(entry.model_spec, name, served, signature)
            field = ("classification_result" if isinstance(result, classification_pb2.ClassificationResult)
                     else "regression_result")
            getattr(entry, field).CopyFrom(result)
        return response


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    """GetModelStatus and HandleReloadConfigRequest on ``ModelServer``."""

    def __init__(self, core: ModelServer, processes: int = 1):
        self.core = core
        self.processes = processes   # --num_serving_processes: a reload would reach one of them only

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
        if self.processes > 1:
            raise ServingError(grpc.StatusCode.FAILED_PRECONDITION,
                               f"HandleReloadConfigRequest would reach one of the {self.processes} serving processes "
                               "only (--num_serving_processes): edit --model_config_file, polled every "
                               "--model_config_file_poll_wait_seconds, instead")
        started = time.monotonic()
        configs = model_config.from_proto(request.config if request.HasField("config")
                                          else model_server_config_pb2.ModelServerConfig())
        self.core.reload_config(configs)
        log.info("config reloaded in %.2fs: %s", time.monotonic() - started, [c.name for c in configs])
        return model_management_pb2.ReloadConfigResponse(status=status_pb2.StatusProto(error_code=0))
