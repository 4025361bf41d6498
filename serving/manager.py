"""Which versions of each model are loaded: polls the base paths, loads new versions, swaps, drains, unloads.

Why it exists: TF Serving's promise is that a new version directory appearing under a base path goes live
without a restart and without failed requests. The manager loads (and warms up) a new version beside the serving
one, routes new requests to it, and unloads the old one only after the requests holding it have finished. A
version that fails to load is retried ``--max_num_load_retries`` times, ``--load_retry_interval_micros`` apart
(a directory that is not a SavedModel at all is not retried), then reported (END with its error) and left out of
the policy, so the serving version stays; it is tried again only when its directory changes. Half-copied
directories are not loaded: a version directory must be settled (unchanged since the last poll, or untouched for
a couple of seconds) and complete (saved_model.pb parses, the variables index and every data shard are there);
one that stays incomplete for INCOMPLETE_SECONDS is loaded anyway, so that its error is reported.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from serving.config import ModelConfig
from serving.errors import ServingError, not_found
from serving.logs import log_event
from serving.metrics import Metrics
from serving.servable import LoadError, LoadOptions, Servable, TransientLoadError, incomplete
from twotower.layout import version_dirs

log = logging.getLogger("twotower.serving")
SETTLE_SECONDS = 2.0
INCOMPLETE_SECONDS = 10.0
STATES = ("START", "LOADING", "AVAILABLE", "UNLOADING", "END")
Loader = Callable[[str, int, Path], Servable]


@dataclass
class VersionStatus:
    """A version's state as GetModelStatus reports it (state one of STATES, error for failed loads)."""

    version: int
    state: str
    error_code: grpc.StatusCode = grpc.StatusCode.OK
    error_message: str = ""


def directory_fingerprint(path: Path) -> tuple:
    """(relative path, size, ctime) of every entry: changes whenever anything in the tree is written or added.

    ctime rather than mtime because copies (shutil.copytree) carry the source's mtimes over.
    """
    entries = []
    for root, dirs, files in os.walk(path):
        for name in sorted(dirs) + sorted(files):
            full = Path(root) / name
            try:
                info = full.stat()
            except OSError:
                continue
            entries.append((str(full.relative_to(path)), info.st_size, info.st_ctime_ns))
    try:
        entries.append((".", 0, path.stat().st_ctime_ns))
    except OSError:
        pass
    return tuple(sorted(entries))


def newest_change(fingerprint: tuple) -> float:
    return max((entry[2] for entry in fingerprint), default=0) / 1e9


@dataclass(frozen=True)
class Unavailable:
    """A configured model with no available version: TF Serving's description, and whether versions were found
    (and failed) or none is there yet."""

    text: str
    failed: bool


@dataclass
class ModelState:
    """Everything the manager tracks for one model."""

    config: ModelConfig
    available: dict[int, Servable] = field(default_factory=dict)
    statuses: dict[int, VersionStatus] = field(default_factory=dict)
    failed: dict[int, tuple] = field(default_factory=dict)     # version → fingerprint of the failed directory
    pending: dict[int, tuple] = field(default_factory=dict)    # version → fingerprint at the last poll
    labels: dict[str, int] = field(default_factory=dict)
    missing_base_logged: bool = False

    def labelled(self, label: str) -> int:
        """The version ``label`` points to; NOT_FOUND (TF Serving's words) for a label the model lacks."""
        if label not in self.labels:
            raise not_found(f"Unrecognized servable version label: {label}")
        return self.labels[label]


class ModelManager:
    """Owns every loaded version of every configured model."""

    def __init__(self, metrics: Metrics, poll_seconds: float = 1.0, loader: Loader | None = None,
                 loading: LoadOptions | None = None, allow_unavailable_labels: bool = False, load_threads: int = 0):
        self.metrics = metrics
        self.load_threads = load_threads   # --num_load_threads: models polled (and loaded) in parallel when > 1
        self.poll_seconds = poll_seconds
        self.loading = loading or LoadOptions()
        self.allow_unavailable_labels = allow_unavailable_labels
        self.loader: Loader = loader or (lambda name, version, path: Servable.load(name, version, path,
                                                                                   self.loading))
        # a stand-in loader (tests) gets no completeness check: its directories hold no real SavedModel
        self.incomplete: Callable[[Path], str | None] = incomplete if loader is None else (lambda path: None)
        self._models: dict[str, ModelState] = {}
        self._lock = threading.Lock()          # guards _models and every ModelState's routing fields
        self._poll_lock = threading.Lock()     # one poll (load/unload pass) at a time
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._unloaders: list[threading.Thread] = []

    # Configuration -------------------------------------------------------------------------------------------
    def configure(self, configs: list[ModelConfig], strict_labels: bool = False) -> list[Unavailable]:
        """Sets the served models and loads/unloads to match, waiting for the loads. With ``strict_labels``, a label
        pointing to a version that is not available afterwards raises FAILED_PRECONDITION (its old assignment
        stays). Returns the configured models that have no available version afterwards."""
        names = [c.name for c in configs]
        if len(names) != len(set(names)):
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, f"duplicate model names in the config: {names}")
        with self._poll_lock:
            removed: list[ModelState] = []
            with self._lock:
                for name in list(self._models):
                    if name not in names:
                        removed.append(self._models.pop(name))
                for config in configs:
                    state = self._models.get(config.name)
                    if state is None:
                        self._models[config.name] = ModelState(config=config)
                    else:
                        if state.config.base_path != config.base_path:
                            state.failed.clear()
                            state.pending.clear()
                        state.config = config
            for state in removed:
                for version in list(state.available):
                    self._retire(state, version)
                self.metrics.available.labels(state.config.name).set(0)
                log_event("model_removed", model=state.config.name)
            self._poll_locked()
            deadline = time.monotonic() + SETTLE_SECONDS + 1
            while self._waiting_for_copies() and time.monotonic() < deadline:   # just written: let it settle
                time.sleep(0.25)
                self._poll_locked()
            problems = self._apply_labels(configs, strict_labels)
            unavailable = self._unavailable(configs)
        if problems and strict_labels:
            raise ServingError(grpc.StatusCode.FAILED_PRECONDITION, "; ".join(problems))
        return unavailable

    def _unavailable(self, configs: list[ModelConfig]) -> list[Unavailable]:
        """Each model without an available version, described as TF Serving does (``{name: M version: V},
        <error>``)."""
        lines = []
        with self._lock:
            for config in configs:
                state = self._models[config.name]
                if state.available:
                    continue
                failed = sorted(state.statuses.values(), key=lambda s: s.version, reverse=True)
                if failed:
                    status = failed[0]
                    error = f"{status.error_code.name}: {status.error_message}" if status.error_message else \
                        f"state {status.state}"
                    lines.append(Unavailable(f"{{name: {config.name} version: {status.version}}}, {error}", True))
                else:
                    lines.append(Unavailable(f"{{name: {config.name}}}, NOT_FOUND: no version found under base path "
                                             f"{config.base_path}", False))
        return lines

    def _apply_labels(self, configs: list[ModelConfig], strict: bool) -> list[str]:
        """Labels take effect at once; one pointing to an unavailable version is reported (and, when strict, the
        label keeps its previous assignment, as TF Serving refuses such a reload)."""
        problems = []
        with self._lock:
            for config in configs:
                state = self._models[config.name]
                labels: dict[str, int] = {}
                for label, version in config.version_labels.items():
                    new_label = label not in state.labels   # --allow_version_labels_for_unavailable_models
                    if version in state.available or not strict or (self.allow_unavailable_labels and new_label):
                        labels[label] = version
                    elif label in state.labels:
                        labels[label] = state.labels[label]
                    if version not in state.available:
                        problems.append(f"Request to assign label {label} to version {version} of model "
                                        f"{config.name}, which is not currently available for inference")
                state.labels = labels
        for problem in problems:
            log_event("label_unavailable", logging.WARNING, message=problem)
        return problems

    def _waiting_for_copies(self) -> bool:
        with self._lock:
            return any(status.state == "START" for state in self._models.values()
                       for status in state.statuses.values())

    # Polling -------------------------------------------------------------------------------------------------
    def start(self, configs: list[ModelConfig]) -> list[Unavailable]:
        """Loads the configured models and starts polling; returns the models that did not become available."""
        unavailable = self.configure(configs)
        if self.poll_seconds > 0:
            self._thread = threading.Thread(target=self._poll_loop, name="model-poll", daemon=True)
            self._thread.start()
        return unavailable

    def _poll_loop(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.poll()
            except Exception:
                log.exception("model poll failed")

    def poll(self) -> None:
        with self._poll_lock:
            self._poll_locked()

    def _poll_locked(self) -> None:
        with self._lock:
            states = list(self._models.values())
        if self.load_threads > 1 and len(states) > 1:
            with futures.ThreadPoolExecutor(self.load_threads, thread_name_prefix="load") as pool:
                for done in [pool.submit(self._poll_model, state) for state in states]:
                    done.result()
            return
        for state in states:
            self._poll_model(state)

    def _poll_model(self, state: ModelState) -> None:
        config = state.config
        base = Path(config.base_path)
        found = version_dirs(base)
        if not found and not state.missing_base_logged:
            log_event("no_versions", logging.WARNING, model=config.name, base_path=str(base),
                      message=f"No versions of servable {config.name} found under base path {base}")
            state.missing_base_logged = True
        elif found:
            state.missing_base_logged = False
        now = time.time()
        loadable: list[int] = []
        copying: set[int] = set()
        for version, path in sorted(found.items(), reverse=True):
            if config.version_policy == "latest" and len(loadable) >= config.latest_versions:
                break  # older directories cannot be wanted: not worth walking them every poll
            if config.version_policy == "specific" and version not in config.versions:
                continue
            if version in state.available:
                loadable.append(version)
                continue
            fingerprint = directory_fingerprint(path)
            if state.failed.get(version) == fingerprint:
                continue
            state.failed.pop(version, None)
            unchanged = state.pending.get(version) == fingerprint
            age = now - newest_change(fingerprint)
            if self.incomplete(path) is None:
                settled = unchanged or age >= SETTLE_SECONDS
            else:   # half-copied, or broken: wait for the copy, but not for ever (its load error is reported)
                settled = unchanged and age >= INCOMPLETE_SECONDS
            state.pending[version] = fingerprint
            if settled:
                loadable.append(version)
            else:
                copying.add(version)
                if version not in state.statuses or state.statuses[version].state == "END":
                    self._set_status(state, VersionStatus(version, "START"))
        wanted = config.wanted(loadable)
        for version in sorted(wanted - set(state.available), reverse=True):
            self._load(state, version, found[version])
        with self._lock:
            available = set(state.available)
        # Old versions go once a wanted one is in; if none of the wanted could be loaded, the old ones keep serving.
        if wanted & available:
            for version in sorted(available - wanted):
                self._retire(state, version)
        for version, status in list(state.statuses.items()):
            if status.state == "START" and version not in copying:   # deleted, or no longer wanted by the policy
                self._set_status(state, VersionStatus(version, "END"))
        self.metrics.available.labels(config.name).set(len(state.available))

    def _load(self, state: ModelState, version: int, path: Path) -> None:
        name = state.config.name
        self._set_status(state, VersionStatus(version, "LOADING"))
        log_event("version_loading", model=name, version=version, path=str(path))
        started = time.perf_counter()
        try:
            servable = self._load_with_retries(name, version, path)
        except Exception as err:
            message = str(err) if isinstance(err, LoadError) else f"{type(err).__name__}: {err}"
            state.failed[version] = directory_fingerprint(path)
            state.pending.pop(version, None)
            self._set_status(state, VersionStatus(version, "END", grpc.StatusCode.UNKNOWN, message[:1000]))
            self.metrics.load_failure(name, version)
            log_event("version_failed", logging.ERROR, model=name, version=version, error=message[:1000])
            if not isinstance(err, LoadError):
                log.debug("load traceback", exc_info=True)
            return
        with self._lock:
            state.available[version] = servable
            state.pending.pop(version, None)
        self._set_status(state, VersionStatus(version, "AVAILABLE"))
        log_event("version_loaded", model=name, version=version, seconds=round(time.perf_counter() - started, 3),
                  signatures=sorted(servable.signatures))

    def _load_with_retries(self, name: str, version: int, path: Path) -> Servable:
        """The loader, retried as TF Serving retries a failed load; a directory that holds no SavedModel or whose
        warm-up fails (the same again next time) is not retried, nor is anything once the server is stopping."""
        attempts = 0
        while True:
            try:
                return self.loader(name, version, path)
            except Exception as err:
                attempts += 1
                final = isinstance(err, LoadError) and not isinstance(err, TransientLoadError)
                if final or attempts > self.loading.max_retries or self._stop.is_set():
                    raise
                log_event("version_load_retry", logging.WARNING, model=name, version=version, attempt=attempts,
                          error=str(err)[:300], retry_in_seconds=self.loading.retry_interval_seconds)
                if self._stop.wait(max(0.0, self.loading.retry_interval_seconds)):
                    raise

    def _retire(self, state: ModelState, version: int) -> None:
        """Stops routing to ``version`` now; unloads it in the background once its in-flight requests finish."""
        with self._lock:
            servable = state.available.pop(version, None)
        if servable is None:
            return
        self._set_status(state, VersionStatus(version, "UNLOADING"))
        log_event("version_unloading", model=state.config.name, version=version, in_flight=servable.in_flight)

        def unload() -> None:
            servable.wait_idle()
            servable.close()
            self._set_status(state, VersionStatus(version, "END"))
            log_event("version_unloaded", model=state.config.name, version=version)

        thread = threading.Thread(target=unload, name=f"unload-{state.config.name}-{version}", daemon=True)
        self._unloaders = [t for t in self._unloaders if t.is_alive()] + [thread]
        thread.start()

    def _set_status(self, state: ModelState, status: VersionStatus) -> None:
        with self._lock:
            state.statuses[status.version] = status

    def stop(self, timeout: float = 30.0) -> None:
        """Stops polling and unloads everything (waiting up to ``timeout`` for requests in flight)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        with self._poll_lock:
            with self._lock:
                states = list(self._models.values())
            for state in states:
                for version in list(state.available):
                    self._retire(state, version)
        deadline = time.monotonic() + timeout
        for thread in self._unloaders:
            thread.join(max(0.0, deadline - time.monotonic()))

    # Routing -------------------------------------------------------------------------------------------------
    def acquire(self, model: str, version: int | None = None, label: str | None = None) -> Servable:
        """The servable a request names, held (call ``release()`` when done). Latest available by default."""
        with self._lock:
            state = self._models.get(model)
            if state is None:
                raise not_found(f"Servable not found for request: {request_text(model, version, label)}")
            if label:
                if version:
                    raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                                       "model_spec must set at most one of version and version_label")
                version = state.labelled(label)
            if version:
                servable = state.available.get(version)
                if servable is None:
                    raise not_found(f"Servable not found for request: {request_text(model, version, None)}")
            else:
                if not state.available:
                    raise ServingError(grpc.StatusCode.UNAVAILABLE,
                                       f"Servable not found for request: Latest({model}): no version of model "
                                       f"{model} is available yet (loading, or none under its base path)")
                servable = state.available[max(state.available)]
            servable.acquire()
            return servable

    def status(self, model: str, version: int | None = None, label: str | None = None) -> list[VersionStatus]:
        with self._lock:
            state = self._models.get(model)
            if state is None:
                raise not_found(f"Could not find any versions of model {model}")
            if label:
                version = state.labelled(label)
            statuses = sorted(state.statuses.values(), key=lambda s: s.version, reverse=True)
            if version:
                statuses = [s for s in statuses if s.version == version]
                if not statuses:
                    raise not_found(f"Could not find version {version} of model {model}")
            elif not statuses:
                raise not_found(f"Could not find any versions of model {model}")
            return [VersionStatus(s.version, s.state, s.error_code, s.error_message) for s in statuses]

    def has_model(self, model: str) -> bool:
        with self._lock:
            return model in self._models

    def model_names(self) -> list[str]:
        with self._lock:
            return sorted(self._models)

    def configs(self) -> list[ModelConfig]:
        with self._lock:
            return [state.config for state in self._models.values()]


def request_text(model: str, version: int | None, label: str | None) -> str:
    """TF Serving's ServableRequest.DebugString(): ``Latest(shop)`` or ``Specific(shop, 7)``."""
    if version:
        return f"Specific({model}, {version})"
    return f"Latest({model})"
