"""The protocol-free model server: what both the gRPC service and the REST API call.

Why it exists: TF Serving's behaviour (which version answers, how a request is checked, which error a client
gets, what is counted) must be identical over gRPC and REST, so it lives here once. Front-ends only translate
their wire format to numpy arrays and ``ServingError`` back to their own status.

Deadlines are absolute ``time.monotonic()`` values (``deadline_after(seconds)`` makes one).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

import grpc
import numpy as np
from tensorflow.core.protobuf import meta_graph_pb2

from serving import DEFAULT_SIGNATURE
from serving import examples as examples_module
from serving.batching import Batcher, BatchingOptions
from serving.config import ModelConfig
from serving.errors import ServingError, exhausted, invalid, not_found
from serving.manager import ModelManager, Unavailable, VersionStatus
from serving.metrics import Metrics
from serving.servable import LoadOptions, Servable
from serving.signature import batchable, request_bytes

__all__ = ["ModelServer", "ModelConfig", "VersionStatus", "BatchingOptions", "deadline_after"]
log = logging.getLogger("twotower.serving")
UNKNOWN = "_unknown"   # metrics label for names clients made up (keeps the label sets bounded)
MAX_REQUEST_ROWS = 1024   # rows per request without --enable_batching (with it, max_batch_size caps them)
T = TypeVar("T")


def deadline_after(seconds: float | None) -> float | None:
    return None if seconds is None else time.monotonic() + seconds


def unavailable_error(models: list[Unavailable]) -> ServingError:
    """ServerCore's WaitUntilModelsAvailable error: ``N model(s) did not become available: {...}``."""
    return ServingError(grpc.StatusCode.UNKNOWN, f"{len(models)} model(s) did not become available: "
                        f"{{{', '.join(u.text for u in models)}}}")


def check_deadline(deadline: float | None, where: str) -> None:
    if deadline is not None and time.monotonic() >= deadline:
        raise ServingError(grpc.StatusCode.DEADLINE_EXCEEDED, f"Deadline exceeded {where}")


class ModelServer:
    """Models, versions, batching and metrics behind one thread-safe API."""

    def __init__(self, configs: list[ModelConfig], metrics: Metrics, batching: BatchingOptions | None = None,
                 poll_seconds: float = 1.0, max_request_bytes: int = 64 << 20,
                 max_request_rows: int = MAX_REQUEST_ROWS, check_method_names: bool = False,
                 loading: LoadOptions | None = None, allow_unavailable_labels: bool = False, load_threads: int = 0):
        self.configs = list(configs)
        self.metrics = metrics
        self.batching = batching
        self.max_request_bytes = max_request_bytes
        self.max_request_rows = max_request_rows
        self.check_method_names = check_method_names
        self.manager = ModelManager(metrics, poll_seconds, loading=loading,
                                    allow_unavailable_labels=allow_unavailable_labels, load_threads=load_threads)
        self.batcher: Batcher | None = None

    def start(self) -> None:
        """Loads the configured models (blocking) and starts polling their base paths. As tensorflow_model_server
        refuses to start when a model's versions fail to load, this raises UNKNOWN listing them (a model with no
        version on disk yet is waited for by polling instead)."""
        if os.environ.get("TF_ENABLE_ONEDNN_OPTS", "1").lower() not in ("0", "false"):
            log.warning("TF_ENABLE_ONEDNN_OPTS is not 0: concurrent multi-row requests can crash this process "
                        "(oneDNN heap corruption); serving.server sets it to 0 before importing tensorflow")
        if self.batching is not None and self.batcher is None:
            self.batcher = Batcher(self.batching, self.metrics)
        failed = [u for u in self.manager.start(self.configs) if u.failed]
        if failed:
            raise unavailable_error(failed)

    def stop(self) -> None:
        """Stops polling, lets requests in flight finish, unloads every version."""
        if self.batcher is not None:
            self.batcher.stop()
        self.manager.stop()

    # Requests ------------------------------------------------------------------------------------------------
    def predict(self, model: str, version: int | None, label: str | None, signature: str | None,
                inputs: Mapping[str, np.ndarray], output_filter: Sequence[str] = (), deadline: float | None = None,
                protocol: str = "grpc") -> tuple[int, dict[str, np.ndarray]]:
        """Runs one request; returns (version served, outputs). Raises ``ServingError`` with TF Serving's code."""
        name = signature or DEFAULT_SIGNATURE

        def work(servable: Servable) -> dict[str, np.ndarray]:
            self._check_limits(request_bytes(inputs), 0, "inputs")
            return self._run(servable, name, inputs, output_filter, deadline, protocol)

        return self._serve(model, version, label, name, deadline, protocol, work)

    def _check_limits(self, size: int, rows: int, what: str) -> None:
        """--max_request_bytes and (without batching) --max_request_rows: RESOURCE_EXHAUSTED past them."""
        if size > self.max_request_bytes:
            raise exhausted(f"request {what} are {size} bytes, over the server's limit of {self.max_request_bytes} "
                            "bytes (--max_request_bytes)")
        if self.batcher is None and rows > self.max_request_rows:
            raise exhausted(f"request has {rows} rows, over the server's limit of {self.max_request_rows} rows per "
                            "request (--max_request_rows): send fewer rows per request")

    def infer(self, model: str, version: int | None, label: str | None, tasks: Sequence[tuple[str, str]],
              examples: Callable[[], np.ndarray], deadline: float | None = None, protocol: str = "grpc",
              missing: str = "No signature was found with the name: ") -> tuple[int, list]:
        """Classify, Regress or MultiInference: ``tasks`` are (signature name, method name) pairs run on the same
        serialized tf.Examples (``examples()`` reads them, after the signatures are checked, in TF Serving's order);
        returns (version served, one Classification/RegressionResult per task)."""
        names = [name or DEFAULT_SIGNATURE for name, _ in tasks]

        def work(servable: Servable) -> list:
            checked = []
            for name, (_, method) in zip(names, tasks):
                signature = servable.signatures.get(name)
                if signature is None:
                    raise invalid(f"{missing}{name}")
                checked.append(examples_module.example_signature(signature, method, self.check_method_names))
            if len({c.input_tensor for c in checked}) > 1:
                raise invalid("Input tensor must be the same for all Signatures.")
            batch = examples()
            self._check_limits(request_bytes({"examples": batch}), len(batch), "examples")
            check_deadline(deadline, "before the request ran")
            return [examples_module.run(c, batch) for c in checked]

        return self._serve(model, version, label, names[0], deadline, protocol, work)

    def _serve(self, model: str, version: int | None, label: str | None, signature: str, deadline: float | None,
               protocol: str, work: Callable[[Servable], T]) -> tuple[int, T]:
        """Runs ``work`` on the servable the request names, held while it runs; counts the request in the
        metrics whatever its outcome, and turns anything unexpected into INTERNAL (traceback logged)."""
        started = time.perf_counter()
        served: int | None = None
        signature_label = UNKNOWN
        code = grpc.StatusCode.OK
        try:
            check_deadline(deadline, "before the request was read")
            servable = self.manager.acquire(model, version, label)
            try:
                served = servable.version
                if signature in servable.signatures:
                    signature_label = signature
                result = work(servable)
            finally:
                servable.release()
            check_deadline(deadline, "while the request ran")
            return served, result
        except ServingError as err:
            code = err.code
            raise
        except Exception as err:
            code = grpc.StatusCode.INTERNAL
            log.exception("request to %s version %s signature %s failed", model, served, signature)
            raise ServingError(code, f"internal error running {model} version {served} signature {signature}: "
                               f"{type(err).__name__}") from err
        finally:
            self.metrics.request(model if self.manager.has_model(model) else UNKNOWN, served, signature_label,
                                 protocol, code.name, time.perf_counter() - started)

    def _run(self, servable: Servable, name: str, inputs: Mapping[str, np.ndarray], output_filter: Sequence[str],
             deadline: float | None, protocol: str) -> dict[str, np.ndarray]:
        signature = servable.signatures.get(name)
        if signature is None:
            raise not_found(f"Serving signature key \"{name}\" not found.")
        wanted = signature.check_output_filter(output_filter)
        ready = signature.validate(inputs, cast_numbers=protocol != "grpc")
        check_deadline(deadline, "before the request ran")
        if self.batcher is not None:
            outputs = self.batcher.run(servable, signature, ready, deadline)
        else:
            self._check_limits(0, next(iter(ready.values())).shape[0] if batchable(signature, ready) else 0, "inputs")
            outputs = signature.run(ready)
        return {alias: outputs[alias] for alias in wanted}

    def signature_defs(self, model: str, version: int | None, label: str | None
                       ) -> tuple[int, dict[str, meta_graph_pb2.SignatureDef]]:
        """GetModelMetadata's signature_def field: every SignatureDef of the version, as in saved_model.pb."""
        servable = self.manager.acquire(model, version, label)
        try:
            return servable.version, dict(servable.signature_defs)
        finally:
            servable.release()

    def status(self, model: str, version: int | None = None, label: str | None = None) -> list[VersionStatus]:
        return self.manager.status(model, version, label)

    def reload_config(self, configs: list[ModelConfig]) -> None:
        """HandleReloadConfigRequest: the new model list, loaded before it returns (labels checked strictly). As
        TF Serving's ServerCore waits for the models, models that did not become available are an UNKNOWN error
        listing them (the models stay configured: a version appearing later is still loaded)."""
        self.configs = list(configs)
        unavailable = self.manager.configure(configs, strict_labels=True)
        if unavailable:
            raise unavailable_error(unavailable)

    def model_names(self) -> list[str]:
        return self.manager.model_names()
