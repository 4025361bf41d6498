"""``assets.extra/tf_serving_warmup_requests`` for an export: one small Predict per signature, as TF Serving replays.

Why it exists: TF Serving (and ``twotower serve``) warm a version up only from the PredictionLogs recorded in
this TFRecord file, so an export that wants its first client request to be fast must carry one. The requests are
built from the SavedModel's own SignatureDefs: one row per signature, "" for strings and 0 for numbers, every
required input given and the optional ones (those with a default) left to their defaults.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import prediction_log_pb2

from twotower.layout import SAVED_MODEL, WARMUP_FILE

INTERNAL_SIGNATURES = ("__saved_model_init_op",)


def warmup_logs(saved_model_dir: Path, model_name: str) -> list[prediction_log_pb2.PredictionLog]:
    """One PredictionLog (a PredictRequest) per signature of the ``serve`` MetaGraph."""
    model = saved_model_pb2.SavedModel()
    model.ParseFromString((saved_model_dir / SAVED_MODEL).read_bytes())
    graph = next(m for m in model.meta_graphs if "serve" in m.meta_info_def.tags)
    logs = []
    for name, signature in sorted(graph.signature_def.items()):
        if name in INTERNAL_SIGNATURES:
            continue
        entry = prediction_log_pb2.PredictionLog()
        request = entry.predict_log.request
        request.model_spec.name = model_name
        request.model_spec.signature_name = name
        for alias, info in signature.inputs.items():
            if alias in signature.defaults:
                continue
            shape = info.tensor_shape
            dims = [1] if shape.unknown_rank else [1 if d.size == -1 else d.size for d in shape.dim]
            if info.dtype == types_pb2.DT_STRING:
                value = np.full(dims, b"", dtype=object)
            else:
                value = np.zeros(dims, dtype=tf.dtypes.as_dtype(info.dtype).as_numpy_dtype)
            request.inputs[alias].CopyFrom(tf.make_tensor_proto(value))
        logs.append(entry)
    return logs


def write_warmup_requests(saved_model_dir: Path, model_name: str) -> Path:
    """Writes the warm-up file into ``saved_model_dir``; returns its path."""
    path = saved_model_dir / WARMUP_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for entry in warmup_logs(saved_model_dir, model_name):
            writer.write(entry.SerializeToString())
    return path
