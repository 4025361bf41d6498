"""The HTTP/1.1 transport under the REST API: a thread per connection, keep-alive, TLS, bounded body reading.

Why it exists: the REST API (serving/rest.py) is TF Serving's routing and JSON; how bytes get on and off the wire is
a separate idea. This module turns each HTTP request into one call of ``handle(method, path, headers, read_body)``
and writes the ``Response`` it returns; it knows nothing about models. ``read_body(limit)`` reads a
``Content-Length`` or chunked body and raises RESOURCE_EXHAUSTED past ``limit`` without reading it; a body left
unread (refused, or never needed) closes the connection after the answer, draining briefly so the client can read
it. It stays on the standard library's ``http.server``: the profile of a one-row predict (docs/benchmarks.md) puts
the transport at a few percent of the request, less than a third-party server would save.
"""

from __future__ import annotations

import logging
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from serving.errors import exhausted, invalid

log = logging.getLogger("twotower.serving.rest")
JSON = "application/json"
LINGER_SECONDS = 2.0        # how long a refused body is drained before the connection closes


@dataclass
class Response:
    """What the transport writes back: status, body, content type, extra headers."""

    status: int
    body: bytes
    content_type: str = JSON
    headers: dict[str, str] = field(default_factory=dict)
    code: str = "OK"   # the canonical code it stands for, for the metrics


Handle = Callable[[str, str, Mapping[str, str], Callable[[int], bytes]], Response]


class HttpServer(ThreadingHTTPServer):
    """A thread per connection; with TLS the handshake runs in that thread, so a slow client blocks no one."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], handle: Handle, ssl_context: ssl.SSLContext | None,
                 threads: int = 0, reuse_port: bool = False):
        self.handle = handle
        self.reuse_port = reuse_port   # several processes accept on the same port (the kernel spreads connections)
        # --rest_api_num_threads: requests processed at once; further connections wait to be served
        self.slots = threading.BoundedSemaphore(threads) if threads > 0 else None
        self.ssl_context = ssl_context
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        if self.reuse_port:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()

    def handle_error(self, request: socket.socket | ssl.SSLSocket, client_address: Any) -> None:
        """A client that went away (reset or closed mid-request, as load generators do when they stop) is a debug
        line; anything else is logged with its traceback, instead of socketserver's print to stderr."""
        if isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)):
            log.debug("connection from %s closed by the client mid-request", client_address)
        else:
            log.exception("REST connection from %s failed", client_address)

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
    """Reads one request off the wire and hands it to the server's ``handle``; HTTP/1.1 keep-alive."""

    protocol_version = "HTTP/1.1"
    server_version = "twotower-serving"
    disable_nagle_algorithm = True   # no 40 ms delayed-ACK stall on a response that spans several packets
    wbufsize = 1 << 16   # headers and body leave in one write (handle_one_request flushes after each request)
    timeout = 120   # idle keep-alive connections close after this many seconds
    server: HttpServer
    _body_read = False   # whether the current request's body was consumed

    def _serve(self) -> None:
        slots = self.server.slots
        if slots is not None:
            slots.acquire()
        try:
            response = self.server.handle(self.command, self.path, self.headers, self._read_body)
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

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)
