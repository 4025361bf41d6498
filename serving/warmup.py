"""Model warm-up exactly as TF Serving does it: replay ``assets.extra/tf_serving_warmup_requests`` at load time.

Why it exists: the first request to a freshly loaded version pays for lazy initialisation (tracing, kernel
selection). TF Serving (servables/tensorflow/saved_model_warmup.cc) sends no request of its own: it replays the
PredictionLogs recorded in the version's ``assets.extra/tf_serving_warmup_requests`` TFRecord file (at most 1000,
each ``--num_request_iterations_for_warmup`` times), and a version whose warm-up fails is not loaded. A version
without that file is loaded cold. The requests run against the version being loaded, whatever model or version
their ModelSpec names.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

from serving import DEFAULT_SIGNATURE, examples, protos
from serving.errors import ServingError, invalid
from twotower.layout import WARMUP_FILE

if TYPE_CHECKING:
    from serving.servable import Servable

log = logging.getLogger("twotower.serving")
MAX_RECORDS = 1000


def read_requests(path: Path) -> list[prediction_log_pb2.PredictionLog]:
    """The PredictionLogs of a warm-up file (LoadError-worthy ValueError when it is unreadable or too long)."""
    logs = []
    try:
        for record in tf.data.TFRecordDataset(str(path)).as_numpy_iterator():
            if len(logs) == MAX_RECORDS:
                raise ValueError(f"Number of warmup records exceeds the maximum ({MAX_RECORDS}) at {path}")
            entry = prediction_log_pb2.PredictionLog()
            try:
                entry.ParseFromString(record)
            except Exception:  # noqa: BLE001 - protobuf raises DecodeError or RuntimeError on garbage
                raise ValueError(f"{path}: record {len(logs)} is not a PredictionLog") from None
            logs.append(entry)
    except tf.errors.OpError as err:
        raise ValueError(f"{path}: not a readable TFRecord file: {err.message.strip().splitlines()[0]}") from None
    return logs


def replay(servable: Servable, entry: prediction_log_pb2.PredictionLog, check_method_names: bool) -> None:
    """Runs one logged request against ``servable``; raises ServingError as a client would get it."""
    kind = entry.WhichOneof("log_type")
    if kind == "predict_log":
        request = entry.predict_log.request
        name = request.model_spec.signature_name or DEFAULT_SIGNATURE
        signature = servable.signatures.get(name)
        if signature is None:
            raise invalid(f'Serving signature key "{name}" not found.')
        wanted = signature.check_output_filter(list(request.output_filter))
        outputs = signature.run(signature.validate(protos.to_arrays(request.inputs)))
        missing = set(wanted) - set(outputs)
        if missing:
            raise invalid(f"outputs {sorted(missing)} not produced")
        return
    if kind in ("classify_log", "regress_log"):
        request = getattr(entry, kind).request
        tasks = [(request.model_spec.signature_name, examples.CLASSIFY if kind == "classify_log"
                  else examples.REGRESS)]
    elif kind == "multi_inference_log":
        request = entry.multi_inference_log.request
        tasks = [(t.model_spec.signature_name, t.method_name) for t in request.tasks]
        examples.check_tasks([t.model_spec.name for t in request.tasks],
                             [name or DEFAULT_SIGNATURE for name, _ in tasks], [method for _, method in tasks])
    else:
        raise invalid(f"Unsupported log_type for warmup: {kind}")
    batch = examples.serialized_examples(request.input)
    for name, method in tasks:
        name = name or DEFAULT_SIGNATURE
        signature = servable.signatures.get(name)
        if signature is None:
            raise invalid(f"No signature was found with the name: {name}")
        examples.run(examples.example_signature(signature, method, check_method_names), batch)


def warm_up(servable: Servable, iterations: int = 1, check_method_names: bool = False) -> int:
    """Replays the version's warm-up file ``iterations`` times; returns the number of records (0 without a file).
    A failure raises LoadError naming the file and record."""
    from serving.servable import LoadError

    path = servable.path / WARMUP_FILE
    if not path.exists():
        log.debug("no warm-up file at %s: %s version %d loads cold", path, servable.model, servable.version)
        return 0
    started = time.perf_counter()
    try:
        logs = read_requests(path)
    except ValueError as err:
        raise LoadError(f"warm-up failed: {err}") from None
    for number, entry in enumerate(logs):
        for _ in range(max(1, iterations)):
            try:
                replay(servable, entry, check_method_names)
            except ServingError as err:
                raise LoadError(f"{path}: warm-up request {number} failed: {err.code.name}: {err.message}") from err
    log.info("warm-up of %s version %d: %d requests x %d in %.2fs", servable.model, servable.version, len(logs),
             max(1, iterations), time.perf_counter() - started)
    return len(logs)
