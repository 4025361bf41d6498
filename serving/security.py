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
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc

HEALTH_PREFIX = "/grpc.health.v1.Health/"
DEFAULT_TOKEN_ENV = "TWOTOWER_AUTH_TOKEN"   # the server's token variable (--auth_token_env), read by the client too


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
    """PEM material: the server's certificate chain and key, and optionally a CA that client certificates must
    match. From files (``--ssl_cert_file`` ...) or from TF Serving's SSLConfig (``--ssl_config_file``)."""

    cert: bytes
    key: bytes
    ca: bytes | None = None

    @classmethod
    def from_settings(cls, cert_file: str | None, key_file: str | None, ca_file: str | None) -> TlsFiles | None:
        if not cert_file and not key_file:
            if ca_file:
                raise SecurityError("--ssl_ca_file needs --ssl_cert_file and --ssl_key_file")
            return None
        if not (cert_file and key_file):
            raise SecurityError("TLS needs both --ssl_cert_file and --ssl_key_file")
        for flag, path in (("--ssl_cert_file", cert_file), ("--ssl_key_file", key_file), ("--ssl_ca_file", ca_file)):
            if path and not Path(path).is_file():
                raise SecurityError(f"{flag} {path}: no such file")
        files = cls(Path(cert_file).read_bytes(), Path(key_file).read_bytes(),
                    Path(ca_file).read_bytes() if ca_file else None)
        files.ssl_context()   # checks the PEMs now, not at the first connection
        return files

    @classmethod
    def from_ssl_config(cls, config) -> TlsFiles:
        """TF Serving's SSLConfig: PEM text inline; ``client_verify`` requires client certificates (signed by
        ``custom_ca``)."""
        if not config.server_key or not config.server_cert:
            raise SecurityError("--ssl_config_file: server_key and server_cert are both required")
        if config.client_verify and not config.custom_ca:
            raise SecurityError("--ssl_config_file: client_verify needs custom_ca (the CA client certificates are "
                                "checked against)")
        files = cls(config.server_cert.encode(), config.server_key.encode(),
                    config.custom_ca.encode() if config.client_verify else None)
        files.ssl_context()
        return files

    def grpc_credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials([(self.key, self.cert)], root_certificates=self.ca,
                                           require_client_auth=self.ca is not None)

    def ssl_context(self) -> ssl.SSLContext:
        """The REST server's context: TLS 1.2+, client certificates required when a CA is given."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            with tempfile.TemporaryDirectory() as folder:   # the ssl module reads the chain and key from files only
                cert, key = Path(folder) / "cert.pem", Path(folder) / "key.pem"
                cert.write_bytes(self.cert)
                key.touch(mode=0o600)
                key.write_bytes(self.key)
                context.load_cert_chain(cert, key)
            if self.ca:
                context.load_verify_locations(cadata=self.ca.decode("ascii", "replace"))
                context.verify_mode = ssl.CERT_REQUIRED
        except (ssl.SSLError, OSError, ValueError) as err:
            raise SecurityError(f"cannot use the TLS certificate and key: {err}") from None
        return context
