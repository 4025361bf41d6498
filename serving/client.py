"""A small Python client for a TF Serving endpoint that serves a twotower export (this server or stock TF Serving).

Why it exists: asking for recommendations over gRPC means building TensorProtos, padding the history into a
[1, H] string tensor, picking outputs apart and turning RpcErrors into something a person can read. This wraps
the official ``PredictionServiceStub`` and ``ModelServiceStub`` once, for ``twotower query`` and for programs.
Item titles are not part of the Predict answer; they come from the export's ``assets/items.tsv`` when the caller
has the model's files (``read_titles``), and are simply left out otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import grpc
import numpy as np

from serving import DEFAULT_SIGNATURE, protos
from serving.tf_protos import load
from twotower import layout


class ClientError(Exception):
    """A failed call, with the server's status code and a message fit to print."""

    def __init__(self, code: grpc.StatusCode | None, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


class Recommendation(NamedTuple):
    item_id: str
    score: float


class Explanation(NamedTuple):
    """Why an item was recommended: the request's own history item most similar to it ("" if none) with that
    similarity, and the words of the request text it matches (empty if none)."""

    item_id: str
    score: float
    words: tuple[str, ...]


class Ranking(list):
    """The ranked ``(item_id, score)`` pairs, best first, and the model version that answered. ``explanations``
    runs parallel to the items; it is empty when the model has no explanation outputs (older exports)."""

    def __init__(self, items: Sequence[Recommendation], model: str, version: int | None,
                 explanations: Sequence[Explanation] = ()):
        super().__init__(items)
        self.model = model
        self.version = version
        self.explanations = list(explanations)


@dataclass(frozen=True)
class VersionState:
    version: int
    state: str            # "AVAILABLE", "LOADING", "END", ...
    error_code: str       # "OK" or a canonical code name
    error_message: str


class RecommenderClient:
    """Recommendations, metadata and status of a model over gRPC; ``token`` and TLS as the server asks.

    TLS is on when ``root_certificates`` (the CA of the server's certificate) or a client certificate is given;
    ``private_key``/``certificate_chain`` are for servers that require client certificates.
    """

    def __init__(self, target: str, token: str | None = None, root_certificates: bytes | None = None,
                 timeout: float = 5.0, private_key: bytes | None = None, certificate_chain: bytes | None = None):
        model_service_pb2_grpc = load("tensorflow_serving.apis.model_service_pb2_grpc")
        prediction_service_pb2_grpc = load("tensorflow_serving.apis.prediction_service_pb2_grpc")
        self.target = target
        self.timeout = float(timeout)
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        if root_certificates is not None or certificate_chain is not None:
            credentials = grpc.ssl_channel_credentials(root_certificates=root_certificates, private_key=private_key,
                                                       certificate_chain=certificate_chain)
            self._channel = grpc.secure_channel(target, credentials)
        else:
            self._channel = grpc.insecure_channel(target)
        self._predict = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        self._models = model_service_pb2_grpc.ModelServiceStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> RecommenderClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- calls ----------------------------------------------------------------------------------------------------

    def recommend(self, model: str, user_id: str = "", history: Sequence[str] = (), text: str = "", k: int = 10,
                  version: int | None = None, signature: str = DEFAULT_SIGNATURE, diversity: float | None = None,
                  exclude: Sequence[str] = (), max_per_category: int | None = None, search: str = "") -> Ranking:
        """Top ``k`` items for one user: any of an id, a history (oldest first) and free text may be empty.

        ``diversity`` (0..1), ``exclude`` (item ids never to return), ``max_per_category`` and ``search`` (a search
        box's query, the ``search_query`` input) are sent only when given, so a model exported before they existed
        is asked exactly as before.
        """
        predict_pb2 = load("tensorflow_serving.apis.predict_pb2")
        if k < 1:
            raise ClientError(None, f"k must be at least 1, got {k}")
        if diversity is not None and not 0.0 <= diversity <= 1.0:
            raise ClientError(None, f"diversity must be within [0, 1], got {diversity}")
        if max_per_category is not None and max_per_category < 0:
            raise ClientError(None, f"max_per_category must be 0 (no cap) or more, got {max_per_category}")
        request = predict_pb2.PredictRequest()
        self._spec(request.model_spec, model, version, signature)
        items = [str(item) for item in history] or [""]
        request.inputs["user_id"].CopyFrom(string_tensor([str(user_id)], [1]))
        request.inputs["history"].CopyFrom(string_tensor(items, [1, len(items)]))
        request.inputs["user_text"].CopyFrom(string_tensor([str(text)], [1]))
        if diversity is not None:
            request.inputs["diversity"].CopyFrom(number_tensor([diversity], "float32"))
        if exclude:
            request.inputs["exclude"].CopyFrom(string_tensor([str(i) for i in exclude], [1, len(exclude)]))
        if max_per_category is not None:
            request.inputs["max_per_category"].CopyFrom(number_tensor([max_per_category], "int32"))
        if search:
            request.inputs["search_query"].CopyFrom(string_tensor([str(search)], [1]))
        response = self._call(self._predict.Predict, request, model)
        missing = {"item_ids", "scores"} - set(response.outputs)
        if missing:
            raise ClientError(None, f"signature {signature} of model {model} has no output(s) "
                              f"{', '.join(sorted(missing))}: not a recommendation signature")
        ids = to_array(response.outputs["item_ids"]).reshape(-1)
        scores = to_array(response.outputs["scores"]).reshape(-1)
        kept = [i for i, score in enumerate(scores) if float(score) != -math.inf][:k]   # -inf: nothing there
        ranked = [Recommendation(_text(ids[i]), float(scores[i])) for i in kept]
        explanations = []
        if {"because", "because_score", "because_words"} <= set(response.outputs):
            because = to_array(response.outputs["because"]).reshape(-1)
            strength = to_array(response.outputs["because_score"]).reshape(-1)
            words = to_array(response.outputs["because_words"]).reshape(-1)
            explanations = [Explanation(_text(because[i]), float(strength[i]), tuple(_text(words[i]).split()))
                            for i in kept]
        answered = response.model_spec.version.value if response.model_spec.HasField("version") else None
        return Ranking(ranked, model, answered, explanations)

    def metadata(self, model: str, version: int | None = None) -> dict[str, Any]:
        """``{"model", "version", "signatures": {name: {"method_name", "inputs", "outputs"}}}``; each tensor
        is ``{"dtype": "string", "shape": [-1, -1]}``."""
        get_model_metadata_pb2 = load("tensorflow_serving.apis.get_model_metadata_pb2")

        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        self._spec(request.model_spec, model, version, "")
        response = self._call(self._predict.GetModelMetadata, request, model)
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signature_map)
        signatures = {name: {"method_name": definition.method_name,
                             "inputs": {alias: _describe(info) for alias, info in definition.inputs.items()},
                             "outputs": {alias: _describe(info) for alias, info in definition.outputs.items()}}
                      for name, definition in signature_map.signature_def.items()}
        return {"model": response.model_spec.name or model, "version": response.model_spec.version.value,
                "signatures": signatures}

    def status(self, model: str, version: int | None = None) -> list[VersionState]:
        """Every version the server knows for ``model`` (or just ``version``) and its state."""
        get_model_status_pb2 = load("tensorflow_serving.apis.get_model_status_pb2")

        request = get_model_status_pb2.GetModelStatusRequest()
        self._spec(request.model_spec, model, version, "")
        response = self._call(self._models.GetModelStatus, request, model)
        states = get_model_status_pb2.ModelVersionStatus.State
        return [VersionState(int(s.version), states.Name(s.state), _code_name(s.status.error_code),
                             s.status.error_message) for s in response.model_version_status]

    def titles(self, path: str | Path, version: int | None = None) -> dict[str, str]:
        """item_id → title from a local copy of the model (see ``read_titles``)."""
        return read_titles(path, version)

    # -- plumbing -------------------------------------------------------------------------------------------------

    @staticmethod
    def _spec(spec: Any, model: str, version: int | None, signature: str) -> None:
        spec.name = model
        if version is not None:
            spec.version.value = int(version)
        if signature:
            spec.signature_name = signature

    def _call(self, method: Any, request: Any, model: str) -> Any:
        try:
            return method(request, timeout=self.timeout, metadata=self._metadata)
        except grpc.RpcError as err:
            raise self._explain(err, model) from None

    def _explain(self, err: grpc.RpcError, model: str) -> ClientError:
        code = err.code() if hasattr(err, "code") else None
        details = (err.details() if hasattr(err, "details") else "") or ""
        if code == grpc.StatusCode.UNAVAILABLE:
            return ClientError(code, f"cannot reach the model server at {self.target} ({details.strip()})")
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return ClientError(code, f"the model server at {self.target} did not answer within {self.timeout:g} s")
        if code == grpc.StatusCode.UNAUTHENTICATED:
            return ClientError(code, f"the model server at {self.target} refused the credentials: {details}")
        name = code.name if code is not None else "UNKNOWN"
        return ClientError(code, f"model {model} at {self.target}: {name}: {details}")


def string_tensor(values: Sequence[str], shape: Sequence[int]) -> Any:
    """A DT_STRING TensorProto (UTF-8)."""
    proto = protos.tensor_pb2.TensorProto(dtype=protos.types_pb2.DT_STRING)
    protos.set_shape(proto, tuple(int(d) for d in shape))
    proto.string_val.extend(value.encode("utf-8") for value in values)
    return proto


def number_tensor(values: Sequence[float], dtype: str) -> Any:
    """A [len(values)] float32 or int32 TensorProto."""
    proto = protos.tensor_pb2.TensorProto()
    protos.fill_tensor_proto(proto, np.asarray(values, dtype=dtype))
    return proto


def to_array(proto: Any) -> np.ndarray:
    """A TensorProto as numpy (strings as bytes), whichever field the server packed its values into."""
    return protos.to_array(proto)


def read_titles(path: str | Path, version: int | None = None) -> dict[str, str]:
    """item_id → title from an export's ``assets/items.tsv``; {} when there is none.

    ``path`` may be the items.tsv file, a version directory, or a base path (then ``version``, or the newest
    version that has the file).
    """
    path = Path(path).expanduser()
    candidates = [path] if path.is_file() else [layout.asset(path, layout.ITEMS_TSV)]
    numbered = sorted(layout.version_dirs(path).items(), key=lambda kv: (kv[0] != version, -kv[0]))
    candidates += [layout.asset(directory, layout.ITEMS_TSV) for _, directory in numbered]
    for candidate in candidates:
        if candidate.is_file():
            return dict(layout.read_items(candidate))
    return {}


def _text(value: Any) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def _code_name(value: int) -> str:
    return next((code.name for code in grpc.StatusCode if code.value[0] == value), str(value))


def _describe(info: Any) -> dict[str, Any]:
    shape = None if info.tensor_shape.unknown_rank else [d.size for d in info.tensor_shape.dim]
    return {"dtype": protos.types_pb2.DataType.Name(info.dtype).removeprefix("DT_").lower(), "shape": shape}
