"""The REST API of TF Serving (``/v1/models/...``) and the Prometheus endpoint: routing and semantics.

Why it exists: many clients (curl, browsers, services without gRPC) speak TF Serving's REST API. This front-end
answers it exactly as tensorflow_serving/model_servers/http_rest_api_handler.cc does: the same paths (model,
``/versions/N`` or ``/labels/L``), the same JSON for status and metadata, the row and columnar predict formats,
``:classify``/``:regress`` on tf.Examples written as JSON objects, and ``{"error": "..."}`` bodies with the HTTP
status mapped from the canonical code. All model work goes through the shared ``ModelServer`` core, so REST and gRPC
always serve the same versions. The HTTP/1.1 wire (sockets, keep-alive, TLS, body reading) is
serving/http_transport.py's.

Where it goes beyond TF Serving: an unknown path is answered 404 and a known path with the wrong method 405 (TF
Serving answers 400 "Malformed request" for both under ``/v1/``); bodies over ``max_body_bytes`` are refused with
RESOURCE_EXHAUSTED before they are read; and with an authenticator every path needs ``Authorization: Bearer
<token>``.
"""

from __future__ import annotations

import json
import logging
import re
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import json_format

from serving import DEFAULT_SIGNATURE, json_tensor
from serving.errors import ServingError, invalid
from serving.http_transport import HttpServer, Response
from serving.metrics import Metrics
from serving.security import Authenticator

log = logging.getLogger("twotower.serving.rest")

METHOD_NAMES = {"classify": "tensorflow/serving/classify", "regress": "tensorflow/serving/regress"}
MAX_BODY_BYTES = 64 << 20
METRICS_PATH = "/monitoring/prometheus/metrics"
UNKNOWN_MODEL = "_unknown"   # the core's metrics label for model names clients made up
_VERSION_OR_LABEL = r"(?:/versions/(\d+)|/labels/([^/:]+))?"
PREDICT_PATH = re.compile(rf"/v1/models/([^/:]+){_VERSION_OR_LABEL}:(classify|regress|predict)", re.IGNORECASE)
STATUS_PATH = re.compile(rf"/v1/models(?:/([^/:]+))?{_VERSION_OR_LABEL}(?:/(metadata))?", re.IGNORECASE)


@dataclass(frozen=True)
class Target:
    """The model, version or label, and sub-resource named by a ``/v1/models/...`` path."""

    model: str
    version: int | None
    label: str | None
    action: str   # "status", "metadata", "predict", "classify" or "regress"


@dataclass
class Call:
    """What one request has resolved so far, for its metrics record."""

    started: float
    target: Target | None = None
    signature: str = ""
    by_core: bool = False   # the core's predict was called: it records the request itself
    scrape: bool = False    # a metrics scrape: not counted


def error_body(message: str) -> bytes:
    return json_tensor.dumps({"error": message})


def parse_target(method: str, path: str) -> Target | None:
    """The request's target, or None when neither TF Serving pattern matches for this method."""
    if method == "POST":
        match = PREDICT_PATH.fullmatch(path)
        if match is None:
            return None
        name, version, label, action = match.groups()
    elif method == "GET":
        match = STATUS_PATH.fullmatch(path)
        if match is None:
            return None
        name, version, label, sub = match.groups()
        action = "metadata" if sub else "status"
    else:
        return None
    if not name:
        raise invalid("Missing model name in request.")
    try:
        number = int(version) if version else None
    except ValueError:
        raise invalid(f"Failed to convert version: {version} to numeric.") from None
    if number is not None and number >= 1 << 63:
        raise invalid(f"Failed to convert version: {version} to numeric.")
    return Target(urllib.parse.unquote(name), number, urllib.parse.unquote(label) if label else None,
                  action.lower())


def allowed_methods(path: str, metrics_path: str | None = METRICS_PATH) -> str | None:
    """The method a known path takes (for a 405), or None for an unknown path (404)."""
    if PREDICT_PATH.fullmatch(path):
        return "POST"
    if STATUS_PATH.fullmatch(path) or path == metrics_path:
        return "GET"
    return None


class RestApi:
    """Turns one HTTP request into core calls and one JSON response; the transport is serving/http_transport.py."""

    def __init__(self, core: Any, metrics: Metrics, authenticator: Authenticator | None = None,
                 max_body_bytes: int = MAX_BODY_BYTES, timeout_s: float | None = None, cors: bool = False,
                 metrics_path: str | None = METRICS_PATH):
        self.core = core
        self.cors = cors                    # --rest_api_enable_cors_support
        self.metrics_path = metrics_path    # from --monitoring_config_file; None = no Prometheus endpoint
        self.metrics = metrics
        self.authenticator = authenticator
        self.max_body_bytes = int(max_body_bytes)
        self.timeout_s = timeout_s

    def handle(self, method: str, raw_path: str, headers: Mapping[str, str],
               read_body: Callable[[int], bytes]) -> Response:
        """Answers a request; ``read_body(limit)`` reads the body (it raises ServingError past ``limit``)."""
        call = Call(started=time.monotonic())
        path = urllib.parse.urlsplit(raw_path).path
        try:
            response = self._route(call, method, path, headers, read_body)
        except ServingError as err:
            response = self._error(err)
        except RecursionError:   # any deeply nested body a parser or message builder walks: the client's fault
            response = self._error(invalid("JSON value nested too deeply to be read as tensors or examples"))
        except Exception as err:
            log.exception("REST %s %s failed", method, path)
            response = self._error(ServingError(grpc.StatusCode.INTERNAL, f"{type(err).__name__}: {err}"))
        if not call.by_core and not call.scrape:
            self._record(call, response.code)
        if self.cors:
            response.headers["Access-Control-Allow-Origin"] = "*"
        return response

    def _record(self, call: Call, code: str) -> None:
        """Counts a request the core did not: status, metadata, and predicts refused before reaching it.

        Labels stay bounded whatever clients send: an unknown model is ``_unknown`` and the signature label is
        the endpoint ("status", "metadata", "predict", ...), as the core does for names it does not know.
        """
        target = call.target
        if target is None:
            model, version, endpoint = "", None, ""
        else:
            model = target.model if target.model in self.core.model_names() else UNKNOWN_MODEL
            version = target.version if code == "OK" else None   # made-up versions would grow the label set
            endpoint = target.action
        self.metrics.request(model, version, endpoint, "rest", code, time.monotonic() - call.started)

    def _route(self, call: Call, method: str, path: str, headers: Mapping[str, str],
               read_body: Callable[[int], bytes]) -> Response:
        if self.authenticator is not None and not self.authenticator.check(headers.get("Authorization")):
            message = ("missing bearer token: send the header 'Authorization: Bearer <token>'"
                       if headers.get("Authorization") is None else "invalid bearer token")
            raise ServingError(grpc.StatusCode.UNAUTHENTICATED, message)
        if self.cors and method == "OPTIONS":   # a CORS preflight, answered as TF Serving's http_server.cc does
            call.scrape = True
            return Response(200, b"", headers={"Access-Control-Allow-Methods": "POST, GET",
                                               "Access-Control-Allow-Headers": "Content-Type, Authorization"})
        if method == "GET" and self.metrics_path is not None and path == self.metrics_path:
            call.scrape = True
            return Response(200, self.metrics.render(), self.metrics.content_type)
        call.target = target = parse_target(method, path)
        if target is None:
            return self._unrouted(method, path)
        if target.action == "status":
            return Response(200, self._status(target))
        if target.action == "metadata":
            return Response(200, self._metadata(target))
        doc = json_tensor.parse_document(read_body(self.max_body_bytes))
        call.signature = json_tensor.signature_name(doc) or DEFAULT_SIGNATURE
        if target.action == "predict":
            return Response(200, self._predict(call, doc))
        return Response(200, self._classify_or_regress(call, doc))

    # -- handlers -----------------------------------------------------------------------------------------------

    def _status(self, target: Target) -> bytes:
        from tensorflow_serving.apis import get_model_status_pb2

        response = get_model_status_pb2.GetModelStatusResponse()
        for status in self.core.status(target.model, target.version, target.label):
            entry = response.model_version_status.add()
            entry.version = int(status.version)
            entry.state = get_model_status_pb2.ModelVersionStatus.State.Value(str(status.state))
            code = status.error_code if status.error_code is not None else grpc.StatusCode.OK
            entry.status.error_code = code.value[0]
            entry.status.error_message = status.error_message or ""
        return json_format.MessageToJson(response, always_print_fields_with_no_presence=True,
                                         indent=1).encode("utf-8")

    def _metadata(self, target: Target) -> bytes:
        from tensorflow_serving.apis import get_model_metadata_pb2, model_pb2

        version, signatures = self.core.signature_defs(target.model, target.version, target.label)
        spec = model_pb2.ModelSpec(name=target.model)
        spec.version.value = int(version)
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        for name, signature_def in signatures.items():
            signature_map.signature_def[name].CopyFrom(signature_def)
        as_dict = lambda message: json_format.MessageToDict(
            message, always_print_fields_with_no_presence=True, preserving_proto_field_name=True)
        document = {"model_spec": as_dict(spec), "metadata": {"signature_def": as_dict(signature_map)}}
        return json.dumps(document, indent=1, ensure_ascii=False).encode("utf-8")

    def _signature(self, target: Target, name: str, missing: str) -> Any:
        _, signatures = self.core.signature_defs(target.model, target.version, target.label)
        if name not in signatures:
            raise invalid(missing.format(name=name))
        return signatures[name]

    def _predict(self, call: Call, doc: dict) -> bytes:
        target, signature = call.target, call.signature
        signature_def = self._signature(target, signature,
                                        'Serving signature name: "{name}" not found in signature def')
        dtypes = {name: info.dtype for name, info in signature_def.inputs.items()}
        inputs, fmt = json_tensor.predict_inputs(doc, dtypes, frozenset(signature_def.defaults))
        deadline = time.monotonic() + self.timeout_s if self.timeout_s else None
        call.by_core = True  # the core records this request in the metrics, whatever its outcome
        _, outputs = self.core.predict(target.model, target.version, target.label, signature, inputs,
                                       deadline=deadline, protocol="rest")
        return json_tensor.dumps(json_tensor.predict_response(outputs, fmt))

    def _classify_or_regress(self, call: Call, doc: dict) -> bytes:
        """``:classify`` / ``:regress`` on tf.Examples given as JSON objects (the body is parsed first, as TF
        Serving's handler does, then the signature is checked)."""
        from serving import examples

        target = call.target
        request_input = json_tensor.examples_input(doc, target.action)
        method = METHOD_NAMES[target.action]
        deadline = time.monotonic() + self.timeout_s if self.timeout_s else None
        call.by_core = True  # the core records this request in the metrics, whatever its outcome
        _, (result,) = self.core.infer(target.model, target.version, target.label, [(call.signature, method)],
                                       lambda: examples.serialized_examples(request_input), deadline,
                                       protocol="rest")
        if target.action == "classify":
            return json_tensor.dumps(json_tensor.classify_response(result))
        return json_tensor.dumps(json_tensor.regress_response(result))

    def _unrouted(self, method: str, path: str) -> Response:
        allowed = allowed_methods(path, self.metrics_path)
        message = f"Malformed request: {method} {path}"
        if allowed is None:
            return Response(404, error_body(message), code=grpc.StatusCode.NOT_FOUND.name)
        return Response(405, error_body(f"{message} (this path takes {allowed})"), headers={"Allow": allowed},
                        code=grpc.StatusCode.UNIMPLEMENTED.name)

    # -- errors -----------------------------------------------------------------------------------------------

    @staticmethod
    def _error(err: ServingError) -> Response:
        headers = {"WWW-Authenticate": "Bearer"} if err.code == grpc.StatusCode.UNAUTHENTICATED else {}
        return Response(err.http_status, error_body(err.message), headers=headers, code=err.code.name)


class RestServer:
    """TF Serving's REST API on ``host:port`` (port 0 picks a free one), served from a background thread."""

    def __init__(self, core: Any, metrics: Metrics, authenticator: Authenticator | None, host: str, port: int,
                 ssl_context: ssl.SSLContext | None = None, max_body_bytes: int = MAX_BODY_BYTES,
                 timeout_s: float | None = None, threads: int = 0, cors: bool = False,
                 metrics_path: str | None = METRICS_PATH, reuse_port: bool = False):
        self.api = RestApi(core, metrics, authenticator, max_body_bytes, timeout_s, cors, metrics_path)
        self.threads = threads
        self.reuse_port = reuse_port
        self.host = host
        self.port = int(port)
        self.ssl_context = ssl_context
        self._server: HttpServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> RestServer:
        """Binds the port (OSError if taken) and serves in a daemon thread."""
        if self._server is not None:
            return self
        self._server = HttpServer((self.host, self.port), self.api.handle, self.ssl_context, self.threads,
                                  self.reuse_port)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name=f"rest-{self.port}", daemon=True)
        self._thread.start()
        scheme = "https" if self.ssl_context else "http"
        log.info("REST API at %s://%s:%d/v1/models/<name>", scheme, self.host, self.port)
        return self

    def stop(self) -> None:
        """Stops accepting requests and closes the port; requests in flight finish on their own threads."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None
