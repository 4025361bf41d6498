"""``twotower serve``: the model server process, with tensorflow_model_server's flag names.

Why it exists: stock ``tensorflow_model_server`` cannot load the ScaNN ops an export carries (and cannot be
installed here), so this process stands in for it: the same flags (every one of them, read into ``ServerOptions`` by
serving/options.py), the same gRPC services (also on a UNIX socket) and REST API, the same polling of base paths and
of the model config file. It loads the models before it listens, prints one "serving ..." line when ready, logs one
JSON line per event, and on SIGTERM/SIGINT stops taking calls, lets those in flight finish, and unloads.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from concurrent import futures
from pathlib import Path

# oneDNN's CPU kernels corrupt memory when several multi-row requests run at once (the rank-3/4 matmuls of the
# towers and BERT; tensorflow/tensorflow#117700): the process dies with "corrupted size vs. prev_size". The Eigen
# kernels are safe; this must be set before tensorflow is imported.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import grpc

from serving.options import ServerOptions, build_parser

log = logging.getLogger("twotower.serving")
GRACE_SECONDS = 10.0


def model_configs(options: ServerOptions) -> list:
    from serving import config

    if options.model_config_file:
        return config.load_file(options.model_config_file)
    if not options.model_base_path:
        raise ValueError("nothing to serve: give --model_base_path (with --model_name) or --model_config_file")
    if not Path(options.model_base_path).is_dir():
        raise ValueError(f"--model_base_path {options.model_base_path}: no such directory")
    return [config.from_flags(options.model_name, options.model_base_path)]


def setup_logging(verbose: bool, quiet: bool) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr)
    logging.getLogger("twotower").setLevel(level)


class Server:
    """The running process: ModelServer + gRPC server (TCP and optionally a UNIX socket) + optional REST server."""

    def __init__(self, options: ServerOptions):
        from serving.batching import BatchingOptions
        from serving.core import ModelServer
        from serving.metrics import Metrics
        from serving.security import Authenticator, TlsFiles
        from serving.servable import LoadOptions

        self.options = options
        for line in options.ignored:
            log.warning("%s (accepted, no effect here)", line)
        set_thread_counts(options.intra_op_threads, options.inter_op_threads)
        self.configs = model_configs(options)
        batching = None
        if options.enable_batching:
            batching = (BatchingOptions.load(options.batching_parameters_file) if options.batching_parameters_file
                        else BatchingOptions())
        self.authenticator = Authenticator.from_settings(options.auth_token_file, options.auth_token_env)
        if options.ssl_config_file:
            if options.ssl_cert_file or options.ssl_key_file:
                raise ValueError("give either --ssl_config_file or --ssl_cert_file/--ssl_key_file, not both")
            from serving.config_protos import SSLConfig
            from serving.options import read_text_proto

            self.tls = TlsFiles.from_ssl_config(read_text_proto(options.ssl_config_file, SSLConfig(),
                                                                "ssl_config_file"))
        else:
            self.tls = TlsFiles.from_settings(options.ssl_cert_file, options.ssl_key_file, options.ssl_ca_file)
        self.ssl_context = self.tls.ssl_context() if self.tls else None
        self.metrics = Metrics()
        retry = options.load_retry_interval_micros
        loading = LoadOptions(tags=options.tags, warm_up=options.enable_model_warmup,
                              warmup_iterations=options.num_request_iterations_for_warmup or 1,
                              max_retries=options.max_num_load_retries,
                              retry_interval_seconds=max(0.0, retry / 1e6),
                              check_method_names=options.enable_signature_method_name_check,
                              model_batching=options.enable_batching and options.enable_per_model_batching_parameters)
        self.core = ModelServer(self.configs, self.metrics, batching, options.file_system_poll_wait_seconds,
                                options.max_request_bytes, max_request_rows=options.max_request_rows,
                                check_method_names=options.enable_signature_method_name_check, loading=loading,
                                allow_unavailable_labels=options.allow_version_labels_for_unavailable_models,
                                load_threads=options.num_load_threads)
        self.grpc_server: grpc.Server | None = None
        self.health = None
        self.rest = None
        self.grpc_port = 0
        self.rest_port = 0
        self.stopped = threading.Event()
        self.config_poller: threading.Thread | None = None

    def start(self, announce: bool = True) -> None:
        """Binds the gRPC port (failing fast if it is taken), loads the models, then starts answering; prints the
        ready line unless ``announce`` is false (``announce()`` prints it later)."""
        from grpc_health.v1 import health_pb2

        from serving.logs import log_event

        log_event("starting", models=[c.name for c in self.configs], batching=self.core.batching is not None,
                  tls=self.tls is not None, auth=self.authenticator.enabled)
        self.grpc_port = self._bind_grpc()
        self.core.start()
        self.grpc_server.start()
        for service in ("", "tensorflow.serving.PredictionService", "tensorflow.serving.ModelService"):
            if self.health is not None:
                self.health.set(service, health_pb2.HealthCheckResponse.SERVING)
        self.rest_port = self._start_rest()
        if announce:
            self.announce()
        if self.options.model_config_file and self.options.model_config_file_poll_wait_seconds > 0:
            self.config_poller = threading.Thread(target=self._poll_config, name="config-poll", daemon=True)
            self.config_poller.start()

    def announce(self) -> None:
        """The one "serving ..." line on stdout (what scripts wait for) and the "ready" event."""
        from serving.logs import log_event

        host = self.options.host
        rest = f"{host}:{self.rest_port}" if self.rest else "off"
        socket_text = f" and unix:{self.options.grpc_socket_path}" if self.options.grpc_socket_path else ""
        print(f"serving gRPC on {host}:{self.grpc_port}{socket_text}, REST on {rest}", flush=True)
        log_event("ready", grpc=f"{host}:{self.grpc_port}", rest=rest, socket=self.options.grpc_socket_path or None,
                  processes=self.options.num_serving_processes)

    def _bind_grpc(self) -> int:
        from grpc_health.v1 import health, health_pb2_grpc
        from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

        from serving.grpc_service import ModelService, PredictionService
        from serving.security import AuthInterceptor

        interceptors = [AuthInterceptor(self.authenticator)] if self.authenticator.enabled else []
        given = dict(self.options.channel_args)   # --grpc_channel_arguments override the defaults below
        defaults = {"grpc.max_receive_message_length": self.options.max_request_bytes,
                    "grpc.max_send_message_length": -1,
                    "grpc.so_reuseport": int(self.options.num_serving_processes > 1)}
        channel_options = [*((k, v) for k, v in defaults.items() if k not in given), *given.items()]
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=self.options.grpc_max_threads,
                                                        thread_name_prefix="grpc"),
                             interceptors=interceptors, options=channel_options)
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
            PredictionService(self.core, self.options.enable_serialization_as_tensor_content), server)
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(
            ModelService(self.core, self.options.num_serving_processes), server)
        if self.options.enable_grpc_healthcheck_service:
            self.health = health.HealthServicer()
            health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        address = f"{self.options.host}:{self.options.port}"
        port = self._listen(server, address)
        if self.options.grpc_socket_path:
            socket_path = Path(self.options.grpc_socket_path).absolute()
            if socket_path.is_socket():
                socket_path.unlink()   # a stale socket of an earlier run, as grpc's own UNIX listener would
            self._listen(server, f"unix:{socket_path}")
        self.grpc_server = server
        return port

    def _listen(self, server: grpc.Server, address: str) -> int:
        try:
            port = (server.add_secure_port(address, self.tls.grpc_credentials()) if self.tls
                    else server.add_insecure_port(address))
        except RuntimeError:
            port = 0
        if port == 0:
            raise OSError(f"cannot listen for gRPC on {address}: the address is in use or not available")
        return port

    def _poll_config(self) -> None:
        """--model_config_file_poll_wait_seconds: re-reads the file and applies it when it changed (TF Serving's
        PollFilesystemAndReloadConfig); a file that does not parse is logged and the running config kept."""
        from serving import config
        from serving.errors import ServingError
        from serving.logs import log_event

        current = self.configs
        while not self.stopped.wait(self.options.model_config_file_poll_wait_seconds):
            try:
                configs = config.load_file(self.options.model_config_file)
                if configs == current:
                    continue
                current = configs
                self.core.reload_config(configs)
                log_event("config_reloaded", models=[c.name for c in configs])
            except ServingError as err:
                log_event("config_reload_failed", logging.ERROR, file=self.options.model_config_file,
                          error=err.message)

    def _start_rest(self) -> int:
        if self.options.rest_api_port == 0:
            return 0
        try:
            from serving.rest import RestServer
        except ImportError as err:
            log.warning("REST API not available (%s): serving gRPC only", err)
            return 0
        self.rest = RestServer(self.core, self.metrics, self.authenticator, self.options.host,
                               self.options.rest_api_port, self.ssl_context,
                               max_body_bytes=self.options.max_request_bytes,
                               timeout_s=self.options.rest_api_timeout_in_ms / 1000.0,
                               threads=self.options.rest_threads, cors=self.options.rest_api_enable_cors_support,
                               metrics_path=self.options.metrics_path,
                               reuse_port=self.options.num_serving_processes > 1)
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


def set_thread_counts(intra: int, inter: int) -> None:
    """--tensorflow_intra_op_parallelism / --tensorflow_inter_op_parallelism (0 = TensorFlow's own choice); must
    run before TensorFlow runs its first op."""
    import tensorflow as tf

    try:
        if intra:
            tf.config.threading.set_intra_op_parallelism_threads(intra)
        if inter:
            tf.config.threading.set_inter_op_parallelism_threads(inter)
    except RuntimeError as err:   # only in-process, where TensorFlow already ran
        raise ValueError(f"cannot set TensorFlow's thread counts: {err}") from None


def print_version() -> None:
    import importlib.metadata

    import tensorflow as tf

    try:
        ours = importlib.metadata.version("twotower")
    except importlib.metadata.PackageNotFoundError:
        ours = "(not installed)"
    print(f"TensorFlow ModelServer: twotower {ours} (tensorflow_model_server 2.20 compatible)\n"
          f"TensorFlow Library: {tf.__version__}")


class Workers:
    """``--num_serving_processes``: the other serving processes, started by the first once it serves.

    Each runs this same server with the same flags on the ports the first one bound (SO_REUSEPORT: the kernel
    spreads connections over the processes), loads its own copy of the models and polls the base paths itself.
    The first process prints the ready line once every worker is ready, forwards SIGTERM/SIGINT to them, and
    stops them all (exit status 1) if one of them dies.
    """

    def __init__(self, argv: list[str], server: Server):
        import subprocess

        self.processes = []
        ports = ["--port", str(server.grpc_port), "--rest_api_port", str(server.rest_port), "--grpc_socket_path", ""]
        for index in range(1, server.options.num_serving_processes):
            env = {**os.environ, WORKER_ENV: str(index)}
            self.processes.append(subprocess.Popen([sys.executable, "-m", "serving.server", *argv, *ports], env=env,
                                                   stdout=subprocess.PIPE, text=True))

    def wait_ready(self) -> str | None:
        """Blocks until every worker printed its ready line; the error when one exited first."""
        for index, process in enumerate(self.processes, start=1):
            for line in process.stdout:
                if line.startswith("serving "):
                    break
            else:
                return f"serving process {index} exited with status {process.wait()} before it was ready"
        return None

    def dead(self) -> str | None:
        for index, process in enumerate(self.processes, start=1):
            if process.poll() is not None:
                return f"serving process {index} exited with status {process.returncode}"
        return None

    def stop(self) -> None:
        import subprocess

        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(GRACE_SECONDS + 20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


WORKER_ENV = "TWOTOWER_SERVING_PROCESS"   # set (to its index) in the processes the first one starts


def serve(args, argv: list[str] | None = None) -> int:
    """Runs until SIGTERM or SIGINT; returns the exit status. ``argv`` (the flags as given) starts the other
    processes of --num_serving_processes."""
    from serving.errors import ServingError
    from serving.security import SecurityError

    setup_logging(args.verbose, args.quiet)
    if args.version:
        print_version()
        return 0
    try:
        server = Server(ServerOptions.from_args(args))
    except (ValueError, ServingError, SecurityError, OSError) as err:
        print(f"error: {getattr(err, 'message', None) or err}", file=sys.stderr)
        return 2
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    first = server.options.num_serving_processes > 1 and WORKER_ENV not in os.environ
    workers: Workers | None = None
    status = 0
    try:
        server.start(announce=not first)
        if first:
            workers = Workers(list(argv if argv is not None else sys.argv[1:]), server)
            error = workers.wait_ready()
            if error:
                raise OSError(error)
            server.announce()
    except (ServingError, OSError) as err:
        print(f"error: {getattr(err, 'message', None) or err}", file=sys.stderr)
        if workers is not None:
            workers.stop()
        server.stop(grace=0)
        return 2
    try:
        while not stop.wait(0.5):   # a timed wait lets the signal handler run promptly
            error = workers.dead() if workers is not None else None
            if error:
                log.error("%s: stopping every serving process", error)
                status = 1
                break
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if workers is not None:
            workers.stop()
        server.stop()
    return status


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    return serve(build_parser().parse_args(argv), argv)


if __name__ == "__main__":
    sys.exit(main())
