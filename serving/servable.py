"""One loaded model version: the SavedModel, its signatures, a warm-up, and a count of requests in flight.

Why it exists: a version is swapped out while requests keep arriving, so the old one may only be dropped once the
requests holding it have finished; the count of holders (acquire/release) and ``wait_idle`` make that safe. The
SignatureDefs are read from ``saved_model.pb`` itself, as TF Serving reports them (tensor names included), and the
ScaNN and TF Text kernels are registered before loading, which is what stock TF Serving cannot do.
"""

from __future__ import annotations

import csv
import logging
import threading
import time
from pathlib import Path

import tensorflow as tf
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2

from serving.signature import Signature

log = logging.getLogger("twotower.serving")
INTERNAL_SIGNATURES = ("__saved_model_init_op",)


class LoadError(Exception):
    """A version directory that cannot be served (missing or corrupt SavedModel, failed warm-up)."""


def register_custom_ops() -> None:
    """Registers the ScaNN and TF Text kernels (import side effects) so their SavedModels load."""
    import scann  # noqa: F401
    import tensorflow_text  # noqa: F401


def read_signature_defs(path: Path) -> dict[str, meta_graph_pb2.SignatureDef]:
    pb = path / "saved_model.pb"
    if not pb.exists():
        raise LoadError(f"{path}: no saved_model.pb in this version directory")
    model = saved_model_pb2.SavedModel()
    try:
        model.ParseFromString(pb.read_bytes())
    except Exception as err:  # noqa: BLE001 - protobuf raises DecodeError or RuntimeError on garbage
        raise LoadError(f"{pb}: not a SavedModel protobuf ({type(err).__name__})") from None
    if not model.meta_graphs:
        raise LoadError(f"{pb}: holds no MetaGraph")
    return dict(model.meta_graphs[0].signature_def)


class Servable:
    """A loaded version (AVAILABLE once ``load`` returns)."""

    def __init__(self, model: str, version: int, path: Path, loaded: object,
                 signatures: dict[str, Signature], signature_defs: dict[str, meta_graph_pb2.SignatureDef]):
        self.model = model
        self.version = version
        self.path = path
        self.loaded = loaded
        self.signatures = signatures
        self.signature_defs = signature_defs
        self._holders = 0
        self._idle = threading.Condition()
        self._titles: dict[str, str] | None = None

    @classmethod
    def load(cls, model: str, version: int, path: Path, warm_up: bool = True) -> Servable:
        """Reads the SignatureDefs, loads the SavedModel and runs one tiny request per signature."""
        defs = read_signature_defs(path)
        register_custom_ops()
        try:
            loaded = tf.saved_model.load(str(path))
        except Exception as err:  # noqa: BLE001 - TF raises many kinds here; the version is reported, not fatal
            raise LoadError(f"{path}: tf.saved_model.load failed: {type(err).__name__}: "
                            f"{str(err).strip().splitlines()[0][:300] if str(err).strip() else ''}") from err
        functions = getattr(loaded, "signatures", {})
        signatures = {name: Signature(name, definition, functions.get(name))
                      for name, definition in defs.items() if name not in INTERNAL_SIGNATURES}
        servable = cls(model, version, path, loaded, signatures, defs)
        if warm_up:
            servable.warm_up()
        return servable

    def warm_up(self) -> None:
        """Traces and runs every signature once, so the first client request does not pay for it."""
        for name, signature in self.signatures.items():
            if signature.function is None:
                continue
            started = time.perf_counter()
            try:
                signature.run(signature.warmup_inputs())
            except Exception as err:  # noqa: BLE001 - a version that cannot answer is not loaded
                raise LoadError(f"{self.path}: warm-up request to signature {name} failed: "
                                f"{getattr(err, 'message', None) or err}") from err
            log.debug("warm-up %s/%d %s %.3fs", self.model, self.version, name, time.perf_counter() - started)

    # Requests in flight -------------------------------------------------------------------------------------
    def acquire(self) -> None:
        with self._idle:
            self._holders += 1

    def release(self) -> None:
        with self._idle:
            self._holders -= 1
            if self._holders == 0:
                self._idle.notify_all()

    @property
    def in_flight(self) -> int:
        with self._idle:
            return self._holders

    def wait_idle(self, timeout: float | None = None) -> bool:
        with self._idle:
            return self._idle.wait_for(lambda: self._holders == 0, timeout)

    def close(self) -> None:
        self.loaded = None
        for signature in self.signatures.values():
            signature.function = None

    # Convenience ---------------------------------------------------------------------------------------------
    def titles(self) -> dict[str, str]:
        """item_id → title from ``assets/items.tsv`` (empty when the export has none)."""
        if self._titles is None:
            path = self.path / "assets" / "items.tsv"
            titles: dict[str, str] = {}
            if path.exists():
                with open(path, encoding="utf-8", newline="") as handle:
                    reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
                    next(reader, None)
                    for row in reader:
                        if len(row) >= 2:
                            titles[row[0]] = row[1]
            self._titles = titles
        return self._titles
