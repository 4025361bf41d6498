"""One loaded model version: the SavedModel, its signatures, its warm-up, and a count of requests in flight.

Why it exists: a version is swapped out while requests keep arriving, so the old one may only be dropped once the
requests holding it have finished; the count of holders (acquire/release) and ``wait_idle`` make that safe. The
SignatureDefs are read from ``saved_model.pb`` itself (the MetaGraph whose tags are ``--saved_model_tags``), as
TF Serving reports them (tensor names included), and the ScaNN and TF Text kernels are registered before loading,
which is what stock TF Serving cannot do. The graph runs in a Session, as TF Serving runs it
(``serving/session.py``). Warm-up is TF Serving's: the requests recorded in
``assets.extra/tf_serving_warmup_requests`` are replayed (``serving/warmup.py``), and nothing else is sent.

``incomplete`` says whether a version directory looks half-written (no parseable saved_model.pb, a missing
variables index or data shard), so the manager waits for a copy to finish before it loads.
"""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass
from pathlib import Path

from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2

from serving.session import GraphSession
from serving.signature import Signature
from twotower.layout import SAVED_MODEL, VERSION_BATCHING

log = logging.getLogger("twotower.serving")
INTERNAL_SIGNATURES = ("__saved_model_init_op",)


class LoadError(Exception):
    """A version directory that cannot be served (missing or corrupt SavedModel, failed warm-up)."""


class TransientLoadError(LoadError):
    """Loading the SavedModel failed: possibly a file still being written, so the manager retries it."""


def register_custom_ops() -> None:
    """Registers the ScaNN and TF Text kernels (import side effects) so their SavedModels load."""
    import scann  # noqa: F401
    import tensorflow_text  # noqa: F401


@dataclass(frozen=True)
class LoadOptions:
    """How versions are loaded (tensorflow_model_server's loading flags)."""

    tags: tuple[str, ...] = ("serve",)           # --saved_model_tags
    warm_up: bool = True                           # --enable_model_warmup
    warmup_iterations: int = 1                     # --num_request_iterations_for_warmup (when > 0)
    max_retries: int = 5                           # --max_num_load_retries
    retry_interval_seconds: float = 60.0           # --load_retry_interval_micros
    check_method_names: bool = False               # --enable_signature_method_name_check
    model_batching: bool = False                   # --enable_batching with --enable_per_model_batching_parameters


def read_saved_model(path: Path) -> saved_model_pb2.SavedModel:
    pb = path / SAVED_MODEL
    if not pb.exists():
        raise LoadError(f"{path}: no {SAVED_MODEL} in this version directory")
    model = saved_model_pb2.SavedModel()
    try:
        model.ParseFromString(pb.read_bytes())
    except Exception as err:  # noqa: BLE001 - protobuf raises DecodeError or RuntimeError on garbage
        raise LoadError(f"{pb}: not a SavedModel protobuf ({type(err).__name__})") from None
    if not model.meta_graphs:
        raise LoadError(f"{pb}: holds no MetaGraph")
    return model


def read_signature_defs(path: Path, tags: tuple[str, ...] = ("serve",)) -> dict[str, meta_graph_pb2.SignatureDef]:
    """The SignatureDefs of the MetaGraph tagged exactly ``tags`` (as TF Serving's loader picks it)."""
    model = read_saved_model(path)
    for meta_graph in model.meta_graphs:
        if set(meta_graph.meta_info_def.tags) == set(tags):
            return dict(meta_graph.signature_def)
    available = [",".join(m.meta_info_def.tags) for m in model.meta_graphs]
    raise LoadError(f"{path}: MetaGraphDef associated with tags '{','.join(tags)}' could not be found in "
                    f"SavedModel (it has tag sets: {'; '.join(available)}); see --saved_model_tags")


SHARD = re.compile(r"variables\.data-(\d+)-of-(\d+)")


def incomplete(path: Path) -> str | None:
    """Why ``path`` looks half-written (None when it looks complete): saved_model.pb must parse and, when there is
    a variables/ folder, its index and every data shard it names must be there."""
    try:
        read_saved_model(path)
    except LoadError as err:
        return str(err)
    variables = path / "variables"
    if not variables.is_dir():
        return None
    shards = {}
    for entry in variables.iterdir():
        match = SHARD.fullmatch(entry.name)
        if match:
            shards[int(match.group(1))] = int(match.group(2))
    if not (variables / "variables.index").exists():
        return f"{variables}: no variables.index" if shards else None
    counts = set(shards.values())
    if len(counts) > 1 or (counts and set(shards) != set(range(counts.pop()))):
        return f"{variables}: variables data shards missing"
    return None


class Servable:
    """A loaded version (AVAILABLE once ``load`` returns)."""

    def __init__(self, model: str, version: int, path: Path, graph: GraphSession | None,
                 signatures: dict[str, Signature], signature_defs: dict[str, meta_graph_pb2.SignatureDef]):
        self.model = model
        self.version = version
        self.path = path
        self.graph = graph
        self.signatures = signatures
        self.signature_defs = signature_defs
        self._holders = 0
        self._idle = threading.Condition()
        self.batching = None   # the version's own BatchingOptions (batching_params.pbtxt), when the server uses them

    @classmethod
    def load(cls, model: str, version: int, path: Path, options: LoadOptions = LoadOptions()) -> Servable:
        """Reads the SignatureDefs, loads the SavedModel and replays its warm-up requests (if any)."""
        from serving import warmup

        defs = read_signature_defs(path, options.tags)
        register_custom_ops()
        try:
            graph = GraphSession(path, options.tags)
        except Exception as err:
            raise TransientLoadError(f"{path}: loading the SavedModel failed: {type(err).__name__}: "
                            f"{str(err).strip().splitlines()[0][:300] if str(err).strip() else ''}") from err
        signatures = {name: Signature(name, definition, graph.bind(definition))
                      for name, definition in defs.items() if name not in INTERNAL_SIGNATURES}
        servable = cls(model, version, path, graph, signatures, defs)
        if options.model_batching and (path / VERSION_BATCHING).exists():
            from serving.batching import BatchingOptions
            from serving.errors import ServingError

            try:
                servable.batching = BatchingOptions.load(path / VERSION_BATCHING)
            except ServingError as err:
                raise LoadError(err.message) from None
        if options.warm_up:
            warmup.warm_up(servable, options.warmup_iterations, options.check_method_names)
        return servable

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
        for signature in self.signatures.values():
            signature.bound = None
        if self.graph is not None:
            self.graph.close()
            self.graph = None
