"""Every tensorflow_model_server 2.20 flag, plus this server's own, parsed into one ``ServerOptions``.

Why it exists: an existing TF Serving command line must start ``twotower serve`` unchanged. Each flag of
tensorflow_model_server's main.cc is accepted with its name, syntax (``--flag=value``; booleans also bare or
``=true``/``=false``) and default; those that apply on a CPU server are implemented, the others (TPU, GPU memory,
TF Lite, XLA, profiler, ...) are accepted and one log line says they have no effect here (``NO_EFFECT``). The
files some flags name (model config, SSLConfig, MonitoringConfig, PlatformConfigMap, session ConfigProto) are
read and checked here, with TF Serving's error text, so the server proper only sees plain values.

Where this server differs on purpose (documented in docs/serving.md): ``--rest_api_port`` defaults to 8501 (TF
Serving: 0 = off), the gRPC health service and the Prometheus endpoint are on by default, ``--grpc_max_threads``
defaults to 16, and ``--enable_signature_method_name_check`` off still refuses a signature of another method
when it does not have the form the method needs.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field
from pathlib import Path

from serving.errors import invalid
from serving.security import DEFAULT_TOKEN_ENV

DEFAULT_METRICS_PATH = "/monitoring/prometheus/metrics"
# Flags accepted for compatibility that change nothing on this server, and why.
NO_EFFECT = {
    "flush_filesystem_caches": "this server keeps no file system caches of its own",
    "num_unload_threads": "versions are unloaded on their own thread each, once their requests have finished",
    "platform_config_file": "only the tensorflow platform is served; the file is checked, its settings unused",
    "per_process_gpu_memory_fraction": "this server runs on CPU",
    "remove_unused_fields_from_bundle_metagraph": "the MetaGraph is not kept in memory beyond the SignatureDefs",
    "prefer_tflite_model": "TensorFlow Lite models are not served here (the SavedModel is)",
    "use_tflite_model": "TensorFlow Lite models are not served here (the SavedModel is)",
    "num_tflite_pools": "TensorFlow Lite models are not served here",
    "num_tflite_interpreters_per_pool": "TensorFlow Lite models are not served here",
    "xla_cpu_compilation_enabled": "XLA JIT is left as TensorFlow's default",
    "xla_gpu_compilation_enabled": "this server runs on CPU; XLA JIT is left as TensorFlow's default",
    "enable_profiler": "no profiler service is offered",
    "thread_pool_factory_config_file": "request thread pools are not configurable here",
    "mixed_precision": "models run at the precision they were saved with",
    "skip_initialize_tpu": "there is no TPU",
}


def parse_bool(text: str) -> bool:
    """TF Serving's boolean flag values."""
    value = str(text).strip().lower()
    if value in ("true", "1", "t", "yes"):
        return True
    if value in ("false", "0", "f", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="twotower serve", allow_abbrev=False,
        description="TF-Serving-compatible model server (gRPC + REST) that loads ScaNN ops. Takes every "
                    "tensorflow_model_server 2.20 flag (see docs/serving.md for which have effect here).")
    add = parser.add_argument

    def flag(name: str, default: bool, help: str) -> None:
        add(f"--{name}", type=parse_bool, nargs="?", const=True, default=default, metavar="true|false", help=help)

    tf_serving = parser.add_argument_group("tensorflow_model_server flags")
    add = tf_serving.add_argument
    add("--port", type=int, default=8500, help="gRPC port (default 8500; 0 = any free port)")
    add("--grpc_socket_path", default="", help="also serve gRPC on this UNIX socket")
    add("--rest_api_port", type=int, default=8501, help="REST port (default 8501; 0 = no REST API)")
    add("--rest_api_num_threads", type=int, default=0, help="REST requests processed at once (default 4 x CPUs)")
    add("--rest_api_timeout_in_ms", type=int, default=30000, help="deadline of a REST request (default 30000)")
    flag("rest_api_enable_cors_support", False, "answer CORS preflights and send Access-Control-Allow-Origin: *")
    flag("enable_batching", False, "batch concurrent requests")
    flag("allow_version_labels_for_unavailable_models", False,
         "a new label may point to a version that is not available yet")
    add("--batching_parameters_file", default="", help="BatchingParameters text proto (with --enable_batching)")
    flag("enable_per_model_batching_parameters", False,
         "with --enable_batching: a version's own batching_params.pbtxt replaces --batching_parameters_file "
         "(num_batch_threads stays the server's)")
    add("--model_config_file", default="",
        help="ModelServerConfig text proto instead of --model_name/--model_base_path")
    add("--model_config_file_poll_wait_seconds", type=int, default=0,
        help="re-read --model_config_file this often (default 0 = only at start)")
    add("--model_name", default="default", help="the model's name (default 'default')")
    add("--model_base_path", default="", help="folder of numeric version directories")
    add("--num_load_threads", type=int, default=0, help="models loaded in parallel (default 0 = one at a time)")
    add("--num_unload_threads", type=int, default=0, help="accepted; no effect here")
    add("--max_num_load_retries", type=int, default=5, help="retries of a failed load (default 5)")
    add("--load_retry_interval_micros", type=int, default=60_000_000,
        help="microseconds between load retries (default 60 s; negative = no wait)")
    add("--file_system_poll_wait_seconds", type=float, default=1.0,
        help="seconds between polls of the base paths for new versions (default 1; 0 = only at start)")
    flag("flush_filesystem_caches", True, "accepted; no effect here")
    add("--tensorflow_session_parallelism", type=int, default=0,
        help="threads for running the graph (intra and inter op) when the two below are 0")
    add("--tensorflow_session_config_file", default="",
        help="ConfigProto text proto: its intra/inter op thread counts are used")
    add("--tensorflow_intra_op_parallelism", type=int, default=0, help="threads within one op (0 = auto)")
    add("--tensorflow_inter_op_parallelism", type=int, default=0, help="ops run at once (0 = auto)")
    flag("use_alts_credentials", False, "refused when true: ALTS is not available here")
    add("--ssl_config_file", default="", help="SSLConfig text proto (server_key, server_cert, custom_ca, "
        "client_verify): serve gRPC and REST over TLS")
    add("--platform_config_file", default="", help="PlatformConfigMap text proto: checked; no effect here")
    add("--per_process_gpu_memory_fraction", type=float, default=0.0, help="accepted; no effect here (CPU)")
    add("--saved_model_tags", default="serve", help="comma-separated tags of the MetaGraph to load (default serve)")
    add("--grpc_channel_arguments", default="",
        help="comma-separated key=value gRPC server arguments, e.g. grpc.max_connection_age_ms=2000")
    add("--grpc_max_threads", type=int, default=16, help="gRPC worker threads (default 16)")
    flag("enable_model_warmup", True, "replay assets.extra/tf_serving_warmup_requests at load (default true)")
    add("--num_request_iterations_for_warmup", type=int, default=0,
        help="times each warm-up request is replayed (used when > 0; default 1)")
    flag("version", False, "print the versions and exit")
    add("--monitoring_config_file", default="", help="MonitoringConfig text proto: the Prometheus path")
    flag("remove_unused_fields_from_bundle_metagraph", True, "accepted; no effect here")
    flag("prefer_tflite_model", False, "accepted; no effect here")
    flag("use_tflite_model", False, "accepted; no effect here")
    add("--num_tflite_pools", type=int, default=0, help="accepted; no effect here")
    add("--num_tflite_interpreters_per_pool", type=int, default=1, help="accepted; no effect here")
    flag("enable_signature_method_name_check", False,
         "Classify/Regress only on signatures of that method_name")
    flag("xla_cpu_compilation_enabled", False, "accepted; no effect here")
    flag("xla_gpu_compilation_enabled", False, "accepted; no effect here")
    flag("enable_profiler", True, "accepted; no effect here")
    add("--thread_pool_factory_config_file", default="", help="accepted; no effect here")
    add("--mixed_precision", default="", help="accepted; no effect here")
    flag("skip_initialize_tpu", False, "accepted; no effect here")
    flag("enable_grpc_healthcheck_service", True, "the gRPC health service (default true here; false turns it off)")
    flag("enable_serialization_as_tensor_content", False,
         "write Predict outputs as packed tensor_content instead of typed fields (float_val, ...)")

    ours = parser.add_argument_group("twotower serve's own flags")
    add = ours.add_argument
    add("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1, loopback only; 0.0.0.0 = all)")
    add("--ssl_cert_file", help="PEM certificate chain: serve gRPC and REST over TLS")
    add("--ssl_key_file", help="PEM private key for --ssl_cert_file")
    add("--ssl_ca_file", help="PEM CA: require client certificates signed by it (mutual TLS)")
    add("--auth_token_file", help="file holding the bearer token clients must send")
    add("--auth_token_env", default=DEFAULT_TOKEN_ENV,
        help="environment variable holding the token when --auth_token_file is not given "
             f"(default {DEFAULT_TOKEN_ENV}; auth is off when it is unset)")
    add("--max_request_bytes", type=int, default=64 << 20, help="largest request accepted (default 64 MiB)")
    add("--max_request_rows", type=int, default=1024,
        help="most rows (examples) per request without --enable_batching (default 1024)")
    add("--num_serving_processes", type=int, default=1,
        help="serve from this many processes sharing the gRPC and REST ports (SO_REUSEPORT, Linux), each with "
             "the models loaded: Python's work then uses every core, at the cost of one copy of the models per "
             "process (default 1; see docs/serving.md)")
    add("-v", "--verbose", action="store_true", help="debug logs")
    add("-q", "--quiet", action="store_true", help="warnings and errors only")
    return parser


def read_text_proto(path: str, message, flag: str):
    """A text proto file into ``message``; errors name the flag and file, as TF Serving's do."""
    from google.protobuf import text_format

    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise invalid(f"--{flag} {path}: cannot read it: {err.strerror or err}") from None
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as err:
        raise invalid(f"--{flag} {path}: Error parsing text-format {message.DESCRIPTOR.full_name}: {err}") from None
    return message


def channel_arguments(text: str) -> list[tuple[str, int | str]]:
    """``--grpc_channel_arguments``: ``key=value`` pairs, comma separated; values that parse as int32 are ints."""
    pairs: list[tuple[str, int | str]] = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise invalid(f"--grpc_channel_arguments: {item!r} is not key=value")
        try:
            number = int(value)
            pairs.append((key, number) if -(1 << 31) <= number < (1 << 31) else (key, value))
        except ValueError:
            pairs.append((key, value))
    return pairs


@dataclass
class ServerOptions:
    """Everything the command line says, checked; built by ``from_args``."""

    args: argparse.Namespace
    channel_args: list[tuple[str, int | str]] = field(default_factory=list)
    metrics_path: str | None = DEFAULT_METRICS_PATH
    tags: tuple[str, ...] = ("serve",)
    intra_op_threads: int = 0
    inter_op_threads: int = 0
    rest_threads: int = 0
    ignored: list[str] = field(default_factory=list)   # "--flag: why" for flags given that have no effect

    def __getattr__(self, name: str):   # the plain flag values: options.port, options.model_name, ...
        return getattr(self.__dict__["args"], name)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ServerOptions:
        for name in ("port", "rest_api_port"):
            if not 0 <= getattr(args, name) <= 65535:
                raise invalid(f"--{name} must be a port number, got {getattr(args, name)}")
        if args.rest_api_port and args.rest_api_port == args.port:
            raise invalid("--rest_api_port cannot be same as --port. Please use a different port for HTTP/REST API.")
        for name in ("max_request_bytes", "max_request_rows", "grpc_max_threads", "rest_api_timeout_in_ms",
                     "num_serving_processes"):
            if getattr(args, name) < 1:
                raise invalid(f"--{name} must be positive, got {getattr(args, name)}")
        for name in ("max_num_load_retries", "num_load_threads", "rest_api_num_threads",
                     "num_request_iterations_for_warmup", "model_config_file_poll_wait_seconds",
                     "tensorflow_intra_op_parallelism", "tensorflow_inter_op_parallelism",
                     "tensorflow_session_parallelism"):
            if getattr(args, name) < 0:
                raise invalid(f"--{name} must be >= 0, got {getattr(args, name)}")
        if args.use_alts_credentials:   # refused rather than ignored: the server would run without the security asked
            raise invalid("--use_alts_credentials: Google ALTS is not available here; use --ssl_config_file (or "
                          "--ssl_cert_file/--ssl_key_file) for TLS")
        tags = tuple(t.strip() for t in args.saved_model_tags.split(",") if t.strip())
        if not tags:
            raise invalid("--saved_model_tags is empty")
        options = cls(args=args, channel_args=channel_arguments(args.grpc_channel_arguments), tags=tags,
                      rest_threads=args.rest_api_num_threads or 4 * (os.cpu_count() or 1))
        options._read_files()
        defaults = vars(build_parser().parse_args([]))
        options.ignored = [f"--{name}: {why}" for name, why in NO_EFFECT.items()
                           if getattr(args, name) != defaults[name]]
        return options

    def _read_files(self) -> None:
        args = self.args
        intra, inter = args.tensorflow_intra_op_parallelism, args.tensorflow_inter_op_parallelism
        if args.tensorflow_session_config_file:
            from tensorflow.core.protobuf import config_pb2

            session = read_text_proto(args.tensorflow_session_config_file, config_pb2.ConfigProto(),
                                      "tensorflow_session_config_file")
            intra = intra or session.intra_op_parallelism_threads
            inter = inter or session.inter_op_parallelism_threads
        self.intra_op_threads = intra or args.tensorflow_session_parallelism
        self.inter_op_threads = inter or args.tensorflow_session_parallelism
        if args.monitoring_config_file:
            from serving.config_protos import MonitoringConfig

            monitoring = read_text_proto(args.monitoring_config_file, MonitoringConfig(), "monitoring_config_file")
            prometheus = monitoring.prometheus_config
            path = prometheus.path or DEFAULT_METRICS_PATH
            if not path.startswith("/"):
                raise invalid(f"--monitoring_config_file {args.monitoring_config_file}: prometheus_config.path "
                              f"must start with '/', got {path!r}")
            self.metrics_path = path if prometheus.enable else None
        if args.platform_config_file:
            from tensorflow_serving.config import platform_config_pb2

            platforms = read_text_proto(args.platform_config_file, platform_config_pb2.PlatformConfigMap(),
                                        "platform_config_file")
            unknown = sorted(set(platforms.platform_configs) - {"tensorflow"})
            if unknown:
                raise invalid(f"--platform_config_file {args.platform_config_file}: only the tensorflow platform is "
                              f"served here, not {', '.join(unknown)}")
