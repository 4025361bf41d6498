"""``twotower serve``: the model server process, with tensorflow_model_server's flag names.

Why it exists: stock ``tensorflow_model_server`` cannot load the ScaNN ops an export carries (and cannot be
installed here), so this process stands in for it: the same flags, the same gRPC services and REST API, the same
polling of base paths. It loads the models before it listens, prints one "serving ..." line when ready, logs one
JSON line per event, and on SIGTERM/SIGINT stops taking calls, lets those in flight finish, and unloads.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from concurrent import futures
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# oneDNN's CPU kernels corrupt memory when several multi-row requests run at once (the rank-3/4 matmuls of the
# towers and BERT; tensorflow/tensorflow#117700): the process dies with "corrupted size vs. prev_size". The Eigen
# kernels are safe; this must be set before tensorflow is imported.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import grpc  # noqa: E402

log = logging.getLogger("twotower.serving")
GRACE_SECONDS = 10.0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="twotower serve", description="TF-Serving-compatible model server (gRPC + REST) that loads ScaNN ops",
        allow_abbrev=False)
    add = parser.add_argument
    add("--port", type=int, default=8500, help="gRPC port (default 8500)")
    add("--rest_api_port", type=int, default=8501, help="REST port (default 8501; 0 = no REST API)")
    add("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1, loopback only; 0.0.0.0 = all)")
    add("--model_name", help="the model's name, with --model_base_path (one model, latest version)")
    add("--model_base_path", help="folder of numeric version directories")
    add("--model_config_file", help="ModelServerConfig text proto (model_config_list) instead of the two above")
    add("--file_system_poll_wait_seconds", type=float, default=1.0,
        help="seconds between polls of the base paths for new versions (default 1; 0 = only at start)")
    add("--enable_batching", action="store_true", help="batch concurrent requests")
    add("--batching_parameters_file", help="BatchingParameters text proto (implies nothing without "
        "--enable_batching)")
    add("--ssl_cert_file", help="PEM certificate chain: serve gRPC and REST over TLS")
    add("--ssl_key_file", help="PEM private key for --ssl_cert_file")
    add("--ssl_ca_file", help="PEM CA: require client certificates signed by it (mutual TLS)")
    add("--auth_token_file", help="file holding the bearer token clients must send")
    add("--auth_token_env", default="TWOTOWER_AUTH_TOKEN",
        help="environment variable holding the token when --auth_token_file is not given "
             "(default TWOTOWER_AUTH_TOKEN; auth is off when it is unset)")
    add("--max_request_bytes", type=int, default=64 << 20, help="largest request accepted (default 64 MiB)")
    add("--grpc_max_threads", type=int, default=16, help="gRPC worker threads (default 16)")
    add("-v", "--verbose", action="store_true", help="debug logs")
    add("-q", "--quiet", action="store_true", help="warnings and errors only")
    return parser


def model_configs(args: argparse.Namespace) -> list:
    from serving import config

    if args.model_config_file:
        if args.model_name or args.model_base_path:
            raise ValueError("give either --model_config_file or --model_name/--model_base_path, not both")
        return config.load_file(args.model_config_file)
    if not args.model_base_path:
        raise ValueError("nothing to serve: give --model_base_path (with --model_name) or --model_config_file")
    if not Path(args.model_base_path).is_dir():
        raise ValueError(f"--model_base_path {args.model_base_path}: no such directory")
    return [config.from_flags(args.model_name or "default", args.model_base_path)]


def setup_logging(verbose: bool, quiet: bool) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr)
    logging.getLogger("twotower").setLevel(level)


class Server:
    """The running process: ModelServer + gRPC server + optional REST server."""

    def __init__(self, args: argparse.Namespace):
        from serving.batching import BatchingOptions
        from serving.core import ModelServer
        from serving.metrics import Metrics
        from serving.security import Authenticator, TlsFiles

        self.args = args
        if args.max_request_bytes < 1:
            raise ValueError(f"--max_request_bytes must be positive, got {args.max_request_bytes}")
        for flag in ("port", "rest_api_port"):
            if not 0 <= getattr(args, flag) <= 65535:
                raise ValueError(f"--{flag} must be a port number, got {getattr(args, flag)}")
        self.configs = model_configs(args)
        batching = None
        if args.enable_batching:
            batching = (BatchingOptions.load(args.batching_parameters_file) if args.batching_parameters_file
                        else BatchingOptions())
        self.authenticator = Authenticator.from_settings(args.auth_token_file, args.auth_token_env)
        self.tls = TlsFiles.from_settings(args.ssl_cert_file, args.ssl_key_file, args.ssl_ca_file)
        self.ssl_context = self.tls.ssl_context() if self.tls else None   # also checks the files early
        self.metrics = Metrics()
        self.core = ModelServer(self.configs, self.metrics, batching, args.file_system_poll_wait_seconds,
                                args.max_request_bytes)
        self.grpc_server: grpc.Server | None = None
        self.health = None
        self.rest = None
        self.grpc_port = 0
        self.rest_port = 0
        self.stopped = threading.Event()

    def start(self) -> None:
        """Binds the gRPC port (failing fast if it is taken), loads the models, then starts answering."""
        from grpc_health.v1 import health_pb2

        from serving.logs import log_event

        log_event("starting", models=[c.name for c in self.configs], batching=self.core.batching is not None,
                  tls=self.tls is not None, auth=self.authenticator.enabled)
        self.grpc_port = self._bind_grpc()
        self.core.start()
        self.grpc_server.start()
        for service in ("", "tensorflow.serving.PredictionService", "tensorflow.serving.ModelService"):
            self.health.set(service, health_pb2.HealthCheckResponse.SERVING)
        self.rest_port = self._start_rest()
        rest = f"{self.args.host}:{self.rest_port}" if self.rest else "off"
        print(f"serving gRPC on {self.args.host}:{self.grpc_port}, REST on {rest}", flush=True)
        log_event("ready", grpc=f"{self.args.host}:{self.grpc_port}", rest=rest)

    def _bind_grpc(self) -> int:
        from grpc_health.v1 import health, health_pb2_grpc
        from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

        from serving.grpc_service import ModelService, PredictionService
        from serving.security import AuthInterceptor

        interceptors = [AuthInterceptor(self.authenticator)] if self.authenticator.enabled else []
        options = [("grpc.max_receive_message_length", self.args.max_request_bytes),
                   ("grpc.max_send_message_length", -1), ("grpc.so_reuseport", 0)]
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=self.args.grpc_max_threads,
                                                        thread_name_prefix="grpc"),
                             interceptors=interceptors, options=options)
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionService(self.core), server)
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(self.core), server)
        self.health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        address = f"{self.args.host}:{self.args.port}"
        try:
            port = (server.add_secure_port(address, self.tls.grpc_credentials()) if self.tls
                    else server.add_insecure_port(address))
        except RuntimeError:
            raise OSError(f"cannot listen for gRPC on {address}: the address is in use or not available") from None
        if port == 0:
            raise OSError(f"cannot listen for gRPC on {address}: the address is in use or not available")
        self.grpc_server = server
        return port

    def _start_rest(self) -> int:
        if self.args.rest_api_port == 0:
            return 0
        try:
            from serving.rest import RestServer
        except ImportError as err:
            log.warning("REST API not available (%s): serving gRPC only", err)
            return 0
        self.rest = RestServer(self.core, self.metrics, self.authenticator, self.args.host, self.args.rest_api_port,
                               self.ssl_context, max_body_bytes=self.args.max_request_bytes)
        self.rest.start()
        return self.rest.port

    def stop(self, grace: float = GRACE_SECONDS) -> None:
        """Refuses new calls, waits up to ``grace`` seconds for those in flight, then unloads the models."""
        from serving.logs import log_event

        if self.stopped.is_set():
            return
        self.stopped.set()
        log_event("stopping", grace_seconds=grace)
        if self.health is not None:
            self.health.enter_graceful_shutdown()
        if self.rest is not None:
            self.rest.stop()
        if self.grpc_server is not None:
            self.grpc_server.stop(grace).wait(grace + 1)   # refuses new calls at once, drains those in flight
        self.core.stop()
        log_event("stopped")


def serve(args: argparse.Namespace) -> int:
    """Runs until SIGTERM or SIGINT; returns the exit status."""
    from serving.errors import ServingError
    from serving.security import SecurityError

    setup_logging(args.verbose, args.quiet)
    try:
        server = Server(args)
    except (ValueError, ServingError, SecurityError, OSError) as err:
        print(f"error: {getattr(err, 'message', None) or err}", file=sys.stderr)
        return 2
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.start()
    except (ServingError, OSError) as err:
        print(f"error: {getattr(err, 'message', None) or err}", file=sys.stderr)
        server.stop(grace=0)
        return 2
    try:
        while not stop.wait(0.5):   # a timed wait lets the signal handler run promptly
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        server.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    return serve(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
