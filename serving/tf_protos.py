"""TensorFlow's and TF Serving's generated protocol-buffer modules, imported without importing TensorFlow.

Why it exists: a TF Serving client needs only messages (``TensorProto``, ``PredictRequest``, the gRPC stubs), but
they live inside the ``tensorflow`` package, and importing any of them runs ``tensorflow/__init__.py`` first: 3-4 s
of importing all of TensorFlow, which every ``twotower query`` paid for a request that takes a millisecond. While
TensorFlow is not imported yet, :func:`load` lets a stand-in for the package (its directory, without its
``__init__``) take its place for as long as the generated modules load, then removes it: only the messages and
protobuf are loaded, and a later ``import tensorflow`` in the same process runs TensorFlow's own ``__init__`` as
usual and finds them already there. Where TensorFlow is already imported (the server, the trainer), it is a plain
import.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
import types

_LOCK = threading.Lock()
PACKAGE = "tensorflow"


def load(name: str) -> types.ModuleType:
    """The module ``name`` (``tensorflow.core.framework.tensor_pb2``, ``tensorflow_serving.apis.predict_pb2``,
    ...), imported without running TensorFlow's package ``__init__`` unless TensorFlow is already imported."""
    with _LOCK:
        if PACKAGE in sys.modules or name in sys.modules:
            return importlib.import_module(name)
        spec = importlib.util.find_spec(PACKAGE)
        if spec is None or not spec.submodule_search_locations:
            return importlib.import_module(name)   # no TensorFlow installed: the import's own error
        stand_in = types.ModuleType(PACKAGE, "stands in for tensorflow while its generated protos load")
        stand_in.__path__ = list(spec.submodule_search_locations)
        sys.modules[PACKAGE] = stand_in
        try:
            return importlib.import_module(name)
        finally:
            if sys.modules.get(PACKAGE) is stand_in:
                del sys.modules[PACKAGE]
