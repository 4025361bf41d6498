"""Which ops a SavedModel uses, and which of them core TensorFlow (and so stock TF Serving) cannot run.

Why it exists: ``saved_model_cli`` fails to list a SavedModel whose ops are not registered in its process, and
TF Serving refuses to load one. Reading op types straight from ``saved_model.pb`` needs no kernels at all; the
core op set is taken in a child process that imports nothing but TensorFlow, so that ops registered here by
tensorflow_text or scann are still recognised as extras.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from twotower.layout import SAVED_MODEL

# Extra op libraries: op name prefix or owner → what loads their kernels, and whether stock TF Serving has them.
SCANN = {"library": "scann", "load": "import scann", "stock_tf_serving": False}
TF_TEXT = {"library": "tensorflow_text", "load": "import tensorflow_text",
           "stock_tf_serving": True}  # TF Serving links the TF Text ops since 2.2 (tensorflow/serving#1490)


def saved_model_proto(version_dir: Path):
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((Path(version_dir) / SAVED_MODEL).read_bytes())
    return proto


def op_types(version_dir: Path) -> set[str]:
    """Every op type in the graph and its function library."""
    graph = saved_model_proto(version_dir).meta_graphs[0].graph_def
    ops = {node.op for node in graph.node}
    for function in graph.library.function:
        ops.update(node.op for node in function.node_def)
    return ops


def core_ops(ops: set[str]) -> set[str]:
    """The subset of ``ops`` that a process importing only TensorFlow knows."""
    script = ("import json, sys, os; os.environ['TF_CPP_MIN_LOG_LEVEL'] = '3'; import tensorflow; "
              "from tensorflow.python.framework import op_def_registry as r; "
              "print(json.dumps([o for o in json.load(sys.stdin) if r.get(o) is not None]))")
    result = subprocess.run([sys.executable, "-c", script], input=json.dumps(sorted(ops)), capture_output=True,
                            text=True, check=True, timeout=300)
    return set(json.loads(result.stdout.strip().splitlines()[-1]))


def custom_ops(version_dir: Path) -> dict[str, list[str]]:
    """Ops outside core TensorFlow, grouped by the library that provides them ("unknown" if none here does)."""
    ops = op_types(version_dir)
    extra = sorted(ops - core_ops(ops))
    groups: dict[str, list[str]] = {}
    if extra:
        import tensorflow_text  # noqa: F401 - registers the TF Text ops in this process
        from tensorflow.python.framework import op_def_registry
    for op in extra:
        if "Scann" in op:  # ScannSearch, ScannSearchBatched, ScannToTensors, TensorsToScann
            owner = SCANN["library"]
        elif op_def_registry.get(op) is not None:
            owner = TF_TEXT["library"]
        else:
            owner = "unknown"
        groups.setdefault(owner, []).append(op)
    return groups


def stock_server_can_load(groups: dict[str, list[str]]) -> bool:
    return all(owner == TF_TEXT["library"] for owner in groups)
