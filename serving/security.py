"""Who may call the server: TLS (optionally with client certificates) and a bearer token, for gRPC and REST alike.

Why it exists: the server is bound to loopback unless told otherwise, but once it listens on a network it must
encrypt and refuse strangers. Both front-ends share one ``Authenticator`` (a constant-time token comparison) and
one ``TlsFiles`` (gRPC server credentials and the REST ``ssl.SSLContext`` come from the same files). gRPC health
checks stay open, so orchestrators can probe a server without holding its token.
"""

from __future__ import annotations

import hmac
import os
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc

HEALTH_PREFIX = "/grpc.health.v1.Health/"
DEFAULT_TOKEN_ENV = "TWOTOWER_AUTH_TOKEN"


class SecurityError(ValueError):
    """A TLS or token setting that cannot be used (the server refuses to start)."""


class Authenticator:
    """Checks ``Authorization: Bearer <token>`` values; with no token configured, everyone is let in."""

    def __init__(self, token: str | None = None):
        if token is not None and not token.strip():
            raise SecurityError("the auth token is empty")
        self._token = token.strip().encode("utf-8") if token else None

    @property
    def enabled(self) -> bool:
        return self._token is not None

    def check(self, header_value: str | None) -> bool:
        """True when auth is off, or ``header_value`` is ``Bearer <the token>`` (compared in constant time)."""
        if self._token is None:
            return True
        if not header_value:
            return False
        scheme, _, credential = header_value.strip().partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(credential.strip().encode("utf-8"), self._token)

    @classmethod
    def from_settings(cls, token_file: str | None = None, token_env: str | None = DEFAULT_TOKEN_ENV
                      ) -> Authenticator:
        """The token from ``token_file`` if given, else from the environment variable ``token_env`` if set."""
        if token_file:
            try:
                token = Path(token_file).read_text(encoding="utf-8").strip()
            except OSError as err:
                raise SecurityError(f"cannot read --auth_token_file {token_file}: {err.strerror or err}") from None
            if not token:
                raise SecurityError(f"--auth_token_file {token_file} is empty")
            return cls(token)
        value = os.environ.get(token_env) if token_env else None
        return cls(value if value and value.strip() else None)


class AuthInterceptor(grpc.ServerInterceptor):
    """Answers UNAUTHENTICATED to every gRPC call without the right bearer token (health checks excepted)."""

    def __init__(self, authenticator: Authenticator):
        self.authenticator = authenticator

    def intercept_service(self, continuation: Callable, handler_call_details: grpc.HandlerCallDetails):
        handler = continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith(HEALTH_PREFIX):
            return handler
        metadata = dict(handler_call_details.invocation_metadata or ())
        if self.authenticator.check(metadata.get("authorization")):
            return handler
        message = ("missing or invalid bearer token: send metadata 'authorization: Bearer <token>'"
                   if metadata.get("authorization") is None else "invalid bearer token")
        return refusal(handler, message)


def refusal(handler: grpc.RpcMethodHandler, message: str) -> grpc.RpcMethodHandler:
    """A handler of the same streaming kind as ``handler`` that aborts with UNAUTHENTICATED."""

    def abort(_request, context: grpc.ServicerContext):
        context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    kinds = {(False, False): grpc.unary_unary_rpc_method_handler,
             (False, True): grpc.unary_stream_rpc_method_handler,
             (True, False): grpc.stream_unary_rpc_method_handler,
             (True, True): grpc.stream_stream_rpc_method_handler}
    make = kinds[(handler.request_streaming, handler.response_streaming)]
    return make(abort, request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)


@dataclass(frozen=True)
class TlsFiles:
    """PEM files: the server's certificate chain and key, and optionally a CA that client certificates must match."""

    cert_file: str
    key_file: str
    ca_file: str | None = None

    @classmethod
    def from_settings(cls, cert_file: str | None, key_file: str | None, ca_file: str | None) -> TlsFiles | None:
        if not cert_file and not key_file:
            if ca_file:
                raise SecurityError("--ssl_ca_file needs --ssl_cert_file and --ssl_key_file")
            return None
        if not (cert_file and key_file):
            raise SecurityError("TLS needs both --ssl_cert_file and --ssl_key_file")
        files = cls(cert_file, key_file, ca_file or None)
        for flag, path in (("--ssl_cert_file", files.cert_file), ("--ssl_key_file", files.key_file),
                           ("--ssl_ca_file", files.ca_file)):
            if path and not Path(path).is_file():
                raise SecurityError(f"{flag} {path}: no such file")
        return files

    @staticmethod
    def _read(path: str) -> bytes:
        return Path(path).read_bytes()

    def grpc_credentials(self) -> grpc.ServerCredentials:
        ca = self._read(self.ca_file) if self.ca_file else None
        return grpc.ssl_server_credentials([(self._read(self.key_file), self._read(self.cert_file))],
                                           root_certificates=ca, require_client_auth=ca is not None)

    def ssl_context(self) -> ssl.SSLContext:
        """The REST server's context: TLS 1.2+, client certificates required when a CA is given."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            context.load_cert_chain(self.cert_file, self.key_file)
            if self.ca_file:
                context.load_verify_locations(self.ca_file)
                context.verify_mode = ssl.CERT_REQUIRED
        except (ssl.SSLError, OSError) as err:
            raise SecurityError(f"cannot use the TLS files ({self.cert_file}, {self.key_file}): {err}") from None
        return context
