"""How gRPC calls reach the servicers: grpcio's threaded server, or its asyncio server (``--grpc_asyncio``).

Why it exists: the servicers (serving/grpc_service.py) translate TF Serving's protos and do not care how a call
arrives; the transport decides which thread runs them, and on a one-row request that is most of what the server
adds to the graph (docs/benchmarks.md, "Where a served request's time goes"). grpcio's threaded server polls its
completion queue in a Python thread and hands every call to a pool thread: two hand-offs per call, each a wake-up
of a sleeping thread that must take the GIL. The asyncio server (``grpc.aio``) polls in C and runs handlers on its
event loop. There a call runs right on the loop thread when no other call is in flight (a lone request pays no
hand-off at all), and otherwise in a pool of ``--grpc_max_threads`` threads, so that graph runs (which release the
GIL) overlap under concurrent load and a long call never holds up the loop for the others.

Both transports offer serving/server.py the same few steps: ``register`` a servicer, ``listen`` on an address,
``start`` (health checks then say SERVING), and ``stop``, which refuses new calls and drains those in flight.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from concurrent import futures
from typing import Any, TypeVar

import grpc
from grpc import aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from serving.security import AsyncAuthInterceptor, Authenticator, AuthInterceptor, TlsFiles

# The services a health check may name; all SERVING once the models are loaded.
HEALTH_SERVICES = ("", "tensorflow.serving.PredictionService", "tensorflow.serving.ModelService")
# Methods that may block for seconds (a reload loads models): never run on the event loop.
NEVER_INLINE = frozenset({"HandleReloadConfigRequest"})
ChannelOptions = list[tuple[str, Any]]
AddServicer = Callable[[Any, Any], None]   # e.g. prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server
T = TypeVar("T")


def listen(server: grpc.Server | aio.Server, address: str, tls: TlsFiles | None) -> int:
    """Adds a listening address (``host:port`` or ``unix:path``); the port bound, or OSError when it is taken."""
    try:
        port = server.add_secure_port(address, tls.grpc_credentials()) if tls else server.add_insecure_port(address)
    except RuntimeError:
        port = 0
    if port == 0:
        raise OSError(f"cannot listen for gRPC on {address}: the address is in use or not available")
    return port


class ThreadedTransport:
    """grpcio's ``grpc.server``: a polling thread hands each call to a pool of ``threads`` threads."""

    def __init__(self, authenticator: Authenticator, options: ChannelOptions, threads: int, health_check: bool):
        interceptors = [AuthInterceptor(authenticator)] if authenticator.enabled else []
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="grpc"),
                                  interceptors=interceptors, options=options)
        self.health = health.HealthServicer() if health_check else None
        if self.health is not None:
            health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)

    def register(self, add: AddServicer, servicer: Any) -> None:
        add(servicer, self.server)

    def listen(self, address: str, tls: TlsFiles | None) -> int:
        return listen(self.server, address, tls)

    def start(self) -> None:
        self.server.start()
        for service in HEALTH_SERVICES if self.health is not None else ():
            self.health.set(service, health_pb2.HealthCheckResponse.SERVING)

    def stop(self, grace: float) -> None:
        if self.health is not None:
            self.health.enter_graceful_shutdown()
        self.server.stop(grace).wait(grace + 1)   # refuses new calls at once, drains those in flight


class Aborted(Exception):
    """``CallContext.abort``: the status to send, raised out of the servicer to the handler on the event loop."""

    def __init__(self, code: grpc.StatusCode, details: str):
        super().__init__(code, details)
        self.code, self.details = code, details


class CallContext:
    """What the servicers use of a ``grpc.ServicerContext`` (the time left, abort), for a call that runs away from
    grpcio's own context: on the event loop or a pool thread of the asyncio transport."""

    def __init__(self, deadline: float | None):
        self.deadline = deadline   # time.monotonic(), or None

    def time_remaining(self) -> float | None:
        return None if self.deadline is None else max(0.0, self.deadline - time.monotonic())

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise Aborted(code, details)


class AsyncServicer:
    """A synchronous servicer's methods as coroutines for ``grpc.aio``: each call runs where ``AsyncioTransport.run``
    decides, and an abort becomes the call's status."""

    def __init__(self, servicer: Any, transport: AsyncioTransport):
        self._servicer = servicer
        self._transport = transport

    def __getattr__(self, name: str) -> Callable[[Any, aio.ServicerContext], Coroutine]:
        method = getattr(self._servicer, name)
        run = self._transport.run

        async def handler(request: Any, context: aio.ServicerContext) -> Any:
            remaining = context.time_remaining()
            call = CallContext(None if remaining is None else time.monotonic() + remaining)
            try:
                return await run(name, method, request, call)
            except Aborted as abort:
                await context.abort(abort.code, abort.details)

        return handler


class AsyncioTransport:
    """``grpc.aio`` on an event loop of its own thread; calls inline when alone, else on ``threads`` pool threads."""

    def __init__(self, authenticator: Authenticator, options: ChannelOptions, threads: int, health_check: bool):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="grpc-loop", daemon=True)
        self.thread.start()
        self.pool = futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="grpc")
        self.in_flight = 0   # calls running or waiting for the pool; read and written on the loop thread only
        interceptors = [AsyncAuthInterceptor(authenticator)] if authenticator.enabled else []

        def build() -> tuple[aio.Server, health.aio.HealthServicer | None]:   # grpc.aio binds to the running loop
            server = aio.server(interceptors=interceptors, options=options)
            servicer = health.aio.HealthServicer() if health_check else None
            if servicer is not None:
                health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
            return server, servicer

        self.server, self.health = self._on_loop(build)

    def _on_loop(self, function: Callable[..., T], *args: Any) -> T:
        """Runs ``function`` on the event loop thread and returns its result."""
        async def call() -> T:
            return function(*args)
        return self._wait(call())

    def _wait(self, coroutine: Awaitable[T], timeout: float | None = None) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    async def run(self, name: str, method: Callable[[Any, CallContext], Any], request: Any, call: CallContext) -> Any:
        """Runs one call: on the loop thread when nothing else is in flight, else on a pool thread."""
        inline = self.in_flight == 0 and name not in NEVER_INLINE
        self.in_flight += 1
        try:
            if inline:
                return method(request, call)
            return await self.loop.run_in_executor(self.pool, method, request, call)
        finally:
            self.in_flight -= 1

    def register(self, add: AddServicer, servicer: Any) -> None:
        self._on_loop(add, AsyncServicer(servicer, self), self.server)

    def listen(self, address: str, tls: TlsFiles | None) -> int:
        return self._on_loop(listen, self.server, address, tls)

    def start(self) -> None:
        async def start() -> None:
            await self.server.start()
            for service in HEALTH_SERVICES if self.health is not None else ():
                await self.health.set(service, health_pb2.HealthCheckResponse.SERVING)
        self._wait(start())

    def stop(self, grace: float) -> None:
        async def stop() -> None:
            if self.health is not None:
                await self.health.enter_graceful_shutdown()
            await self.server.stop(grace)   # refuses new calls at once, drains those in flight

        try:
            self._wait(stop(), grace + 1)
        finally:
            self.pool.shutdown(wait=True)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)
