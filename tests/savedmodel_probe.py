"""Runs requests against exported SavedModels in a process that imports only tensorflow, tensorflow_text and
scann, as a serving process would; writes every output to an .npz file per version.

Usage: python savedmodel_probe.py VERSION_DIR REQUESTS.json OUT.npz [VERSION_DIR REQUESTS.json OUT.npz ...]
REQUESTS.json: {"name": {"signature": "...", "inputs": {"user_id": [...], ...}}, ...}
Several versions in one call share the process start (one TensorFlow import for all).
"""

import json
import os
import sys

os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
import numpy as np
import scann  # noqa: F401
import tensorflow as tf
import tensorflow_text  # noqa: F401
from tensorflow.core.protobuf import saved_model_pb2


def probe(version: str, requests_file: str, out_file: str) -> None:
    model = tf.saved_model.load(version)
    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(version, "saved_model.pb"), "rb") as handle:
        proto.ParseFromString(handle.read())
    definitions = proto.meta_graphs[0].signature_def
    results = {}
    with open(requests_file, encoding="utf-8") as handle:
        requests = json.load(handle)
    for name, request in requests.items():
        # an omitted optional input gets the SignatureDef's default, as TF Serving feeds it
        inputs = {k: tf.constant(tf.make_ndarray(v)) for k, v in definitions[request["signature"]].defaults.items()}
        inputs.update({k: tf.constant(v) for k, v in request["inputs"].items()})
        outputs = model.signatures[request["signature"]](**inputs)
        for key, value in outputs.items():
            results[f"{name}/{key}"] = value.numpy()
    project = sorted(m for m in ("towers", "training", "export", "serving", "ingest", "twotower", "transformers",
                                 "tensorflow_recommenders") if m in sys.modules)
    results["__imported__"] = np.array(project, dtype=object)
    np.savez(out_file, **results)


arguments = sys.argv[1:]
if not arguments or len(arguments) % 3:
    sys.exit(__doc__)
for start in range(0, len(arguments), 3):
    probe(*arguments[start:start + 3])
