"""The REST API of TF Serving (``/v1/models/...``) and the Prometheus endpoint, on a stdlib HTTP server.

Why it exists: many clients (curl, browsers, services without gRPC) speak TF Serving's REST API. This front-end
answers it exactly as tensorflow_serving/model_servers/http_rest_api_handler.cc does: the same paths (model,
``/versions/N`` or ``/labels/L``), the same JSON for status and metadata, the row and columnar predict formats,
``:classify``/``:regress`` on tf.Examples written as JSON objects, and ``{"error": "..."}`` bodies with the HTTP
status mapped from the canonical code. All model work goes through the shared ``ModelServer`` core, so REST and gRPC
always serve the same versions.

Where it goes beyond TF Serving: an unknown path is answered 404 and a known path with the wrong method 405 (TF
Serving answers 400 "Malformed request" for both under ``/v1/``); bodies over ``max_body_bytes`` are refused with
RESOURCE_EXHAUSTED before they are read; and with an authenticator every path needs ``Authorization: Bearer
<token>``.
"""

from __future__ import annotations

import json
import logging
import re
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
from google.protobuf import json_format

from serving import json_tensor
from serving.errors import ServingError, exhausted, invalid
from serving.metrics import Metrics
from serving.security import Authenticator

log = logging.getLogger("twotower.serving.rest")

DEFAULT_SIGNATURE = "serving_default"
METHOD_NAMES = {"classify": "tensorflow/serving/classify", "regress": "tensorflow/serving/regress"}
MAX_BODY_BYTES = 64 << 20
METRICS_PATH = "/monitoring/prometheus/metrics"
JSON = "application/json"
LINGER_SECONDS = 2.0        # how long a refused body is drained before the connection closes
UNKNOWN_MODEL = "_unknown"   # the core's metrics label for model names clients made up
_VERSION_OR_LABEL = r"(?:/versions/(\d+)|/labels/([^/:]+))?"
PREDICT_PATH = re.compile(rf"/v1/models/([^/:]+){_VERSION_OR_LABEL}:(classify|regress|predict)", re.IGNORECASE)
STATUS_PATH = re.compile(rf"/v1/models(?:/([^/:]+))?{_VERSION_OR_LABEL}(?:/(metadata))?", re.IGNORECASE)


@dataclass
class Response:
    status: int
    body: bytes
    content_type: str = JSON
    headers: dict[str, str] = field(default_factory=dict)
    code: str = "OK"   # the canonical code it stands for, for the metrics


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
    """Turns one HTTP request into core calls and one JSON response; the transport lives in ``RestServer``."""

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
        except Exception as err:  # noqa: BLE001 - a client gets a message, never a traceback
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
        as_dict = lambda message: json_format.MessageToDict(  # noqa: E731
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


class _HttpServer(ThreadingHTTPServer):
    """A thread per connection; with TLS the handshake runs in that thread, so a slow client blocks no one."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], api: RestApi, ssl_context: ssl.SSLContext | None,
                 threads: int = 0):
        self.api = api
        # --rest_api_num_threads: requests processed at once; further connections wait to be served
        self.slots = threading.BoundedSemaphore(threads) if threads > 0 else None
        self.ssl_context = ssl_context
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    def finish_request(self, request: socket.socket, client_address: Any) -> None:
        if self.ssl_context is not None:
            try:
                request.settimeout(_Handler.timeout)   # a client that never finishes the handshake gives up
                request = self.ssl_context.wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError) as err:
                log.debug("TLS handshake with %s failed: %s", client_address, err)
                return
        super().finish_request(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    """Reads one request off the wire and hands it to ``RestApi.handle``; HTTP/1.1 keep-alive."""

    protocol_version = "HTTP/1.1"
    server_version = "twotower-serving"
    disable_nagle_algorithm = True   # headers and body go out in two writes: no 40 ms delayed-ACK stall
    timeout = 120   # idle keep-alive connections close after this many seconds
    server: _HttpServer
    _body_read = False   # whether the current request's body was consumed

    def _serve(self) -> None:
        slots = self.server.slots
        if slots is not None:
            slots.acquire()
        try:
            response = self.server.api.handle(self.command, self.path, self.headers, self._read_body)
        finally:
            if slots is not None:
                slots.release()
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        for name, value in response.headers.items():
            self.send_header(name, value)
        unread = self._unread_body()
        if unread:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)
        if unread:
            self._linger()

    def _linger(self) -> None:
        """Discards what the client still sends (briefly) before closing, so it can read the answer: closing a
        socket with unread data would reset the connection and lose the response on the client's side."""
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_WR)
            self.connection.settimeout(LINGER_SECONDS)
            deadline = time.monotonic() + LINGER_SECONDS
            while time.monotonic() < deadline and self.connection.recv(1 << 16):
                pass
        except OSError:
            pass

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _serve

    def _read_body(self, limit: int) -> bytes:
        self._body_read = True
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked(limit)
        length_text = self.headers.get("Content-Length", "0") or "0"
        try:
            length = int(length_text)
        except ValueError:
            self._body_read = False
            raise invalid(f"Content-Length is not a number: {length_text!r}") from None
        if length > limit:
            self._body_read = False
            raise exhausted(f"request body of {length} bytes is over the limit of {limit} bytes")
        return self.rfile.read(length) if length > 0 else b""

    def _read_chunked(self, limit: int) -> bytes:
        body = bytearray()
        while True:
            line = self.rfile.readline(1024).split(b";")[0].strip()
            try:
                size = int(line, 16)
            except ValueError:
                self._body_read = False
                raise invalid("malformed chunked request body") from None
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return bytes(body)
            if len(body) + size > limit:
                self._body_read = False
                raise exhausted(f"request body is over the limit of {limit} bytes")
            body += self.rfile.read(size)
            self.rfile.readline(1024)

    def _unread_body(self) -> bool:
        """A body was sent but not read (refused or never needed): the connection cannot be reused."""
        if self._body_read:
            self._body_read = False
            return False
        return self.headers.get("Content-Length", "0") not in ("", "0") or "Transfer-Encoding" in self.headers

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        log.debug("%s %s", self.address_string(), format % args)


class RestServer:
    """TF Serving's REST API on ``host:port`` (port 0 picks a free one), served from a background thread."""

    def __init__(self, core: Any, metrics: Metrics, authenticator: Authenticator | None, host: str, port: int,
                 ssl_context: ssl.SSLContext | None = None, max_body_bytes: int = MAX_BODY_BYTES,
                 timeout_s: float | None = None, threads: int = 0, cors: bool = False,
                 metrics_path: str | None = METRICS_PATH):
        self.api = RestApi(core, metrics, authenticator, max_body_bytes, timeout_s, cors, metrics_path)
        self.threads = threads
        self.host = host
        self.port = int(port)
        self.ssl_context = ssl_context
        self._server: _HttpServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> RestServer:
        """Binds the port (OSError if taken) and serves in a daemon thread."""
        if self._server is not None:
            return self
        self._server = _HttpServer((self.host, self.port), self.api, self.ssl_context, self.threads)
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
