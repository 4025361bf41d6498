"""Request batching: concurrent requests to one version and signature run as one batch, then split back.

Why it exists: the towers and the index cost nearly the same for 1 row as for 32, so under concurrent load one
graph run for many requests multiplies throughput (TF Serving's ``--enable_batching``). A request waits at most
``batch_timeout_micros`` for companions; requests are grouped only when their inputs have the same names, dtypes
and trailing dimensions, except that string inputs of rank 2 (``history`` [B, H]) may differ in H: the shorter
ones are padded with "" at the front. Front padding keeps the answers identical: "" is padding in these
signatures, and the history is read from its end (most recent last, recency counted from the last position).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np

from serving.errors import ServingError, exhausted, invalid
from serving.metrics import Metrics
from serving.servable import Servable
from serving.signature import Signature, batchable

log = logging.getLogger("twotower.serving")
# BatchingParameters fields: those used, and those TF Serving has that are accepted and ignored here.
USED = ("max_batch_size", "batch_timeout_micros", "num_batch_threads", "max_enqueued_batches")
IGNORED = ("thread_pool_name", "allowed_batch_sizes", "pad_variable_length_inputs", "enable_large_batch_splitting",
           "max_execution_batch_size", "batch_padding_policy", "mixed_priority_batching_policy",
           "low_priority_max_batch_size", "low_priority_batch_timeout_micros", "low_priority_allowed_batch_sizes",
           "low_priority_max_enqueued_batches")
FIELD = re.compile(r"\s*(\w+)\s*(?::\s*(\"[^\"]*\"|[^\s{}]+)|\{\s*value\s*:\s*(\"[^\"]*\"|[^\s{}]+)\s*\})\s*")


@dataclass(frozen=True)
class BatchingOptions:
    """The subset of TF Serving's BatchingParameters this server applies."""

    max_batch_size: int = 64
    batch_timeout_micros: int = 2000
    num_batch_threads: int = 2
    max_enqueued_batches: int = 100

    def __post_init__(self) -> None:
        for name in USED:
            least = 0 if name == "batch_timeout_micros" else 1
            if getattr(self, name) < least:
                raise invalid(f"batching parameter {name} must be >= {least}, got {getattr(self, name)}")

    @classmethod
    def parse(cls, text: str, source: str = "batching parameters") -> BatchingOptions:
        """The text proto TF Serving reads, e.g. ``max_batch_size { value: 64 } batch_timeout_micros { value: 0 }``
        (``name: value`` without the wrapper is accepted too). Unknown field names are errors."""
        text = re.sub(r"#[^\n]*", "", text)
        values: dict[str, int] = {}
        position = 0
        while position < len(text.rstrip()):
            match = FIELD.match(text, position)
            if match is None:
                snippet = text[position:position + 40].strip()
                raise invalid(f"{source}: cannot parse near {snippet!r} (expected `name {{ value: N }}`)")
            name, raw = match.group(1), match.group(2) or match.group(3)
            position = match.end()
            if name in IGNORED:
                log.warning("%s: %s is not supported here and is ignored", source, name)
                continue
            if name not in USED:
                raise invalid(f"{source}: unknown batching parameter {name!r} (known: {', '.join(USED)})")
            try:
                values[name] = int(raw)
            except ValueError:
                raise invalid(f"{source}: {name} must be an integer, got {raw}") from None
        return cls(**values)

    @classmethod
    def load(cls, path: str | Path) -> BatchingOptions:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as err:
            raise invalid(f"cannot read the batching parameters file {path}: {err}") from err
        return cls.parse(text, str(path))


def group_key(signature: Signature, inputs: Mapping[str, np.ndarray]) -> tuple:
    """Requests with equal keys can share a batch (see the module docstring for the history exception)."""
    parts = []
    for name in sorted(inputs):
        array = inputs[name]
        trailing = list(array.shape[1:])
        if array.dtype == object and array.ndim == 2:
            trailing = [None]
        parts.append((name, array.dtype.str, tuple(trailing)))
    return (signature.name, tuple(parts))


def concatenate(requests: list[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    merged = {}
    for name in requests[0]:
        arrays = [r[name] for r in requests]
        if arrays[0].dtype == object and arrays[0].ndim == 2:
            width = max(a.shape[1] for a in arrays)
            arrays = [a if a.shape[1] == width else
                      np.concatenate([np.full((a.shape[0], width - a.shape[1]), b"", dtype=object), a], axis=1)
                      for a in arrays]
        merged[name] = np.concatenate(arrays, axis=0)
    return merged


@dataclass(eq=False)   # identity: the queue finds and removes tasks by object, never by comparing arrays
class Task:
    """One request waiting for its batch."""

    servable: Servable
    signature: Signature
    inputs: dict[str, np.ndarray]
    deadline: float | None
    key: tuple
    rows: int
    options: BatchingOptions   # the model's own (--enable_per_model_batching_parameters) or the server's
    enqueued: float = field(default_factory=time.monotonic)
    done: threading.Event = field(default_factory=threading.Event)
    result: dict[str, np.ndarray] | None = None
    error: Exception | None = None
    abandoned: bool = False


class Batcher:
    """A shared queue and ``num_batch_threads`` workers that form and run batches."""

    def __init__(self, options: BatchingOptions, metrics: Metrics):
        self.options = options
        self.metrics = metrics
        self._queue: list[Task] = []
        self._queued_rows = 0
        self._cv = threading.Condition()
        self._closed = False
        self._workers = [threading.Thread(target=self._work, name=f"batch-{i}", daemon=True)
                         for i in range(options.num_batch_threads)]
        for worker in self._workers:
            worker.start()

    def run(self, servable: Servable, signature: Signature, inputs: dict[str, np.ndarray],
            deadline: float | None) -> dict[str, np.ndarray]:
        """Runs validated ``inputs`` as part of a batch; blocks until its rows come back."""
        if not batchable(signature, inputs):
            return signature.run(inputs)
        options = getattr(servable, "batching", None) or self.options
        rows = next(iter(inputs.values())).shape[0]
        if rows > options.max_batch_size:
            raise exhausted(f"Task size {rows} is larger than maximum batch size {options.max_batch_size} "
                            "(the batching parameter max_batch_size): send fewer rows per request")
        if rows == 0:
            return signature.run(inputs)
        task = Task(servable, signature, inputs, deadline, (id(servable), group_key(signature, inputs)), rows,
                    options)
        with self._cv:
            if self._closed:
                raise ServingError(grpc.StatusCode.UNAVAILABLE, "the server is shutting down")
            if self._queued_rows + rows > options.max_enqueued_batches * options.max_batch_size:
                raise ServingError(grpc.StatusCode.UNAVAILABLE,
                                   "The batch scheduling queue to which this task was submitted is full")
            self._queue.append(task)
            self._queued_rows += rows
            self._cv.notify_all()
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        if not task.done.wait(timeout):
            with self._cv:
                if task in self._queue:
                    self._queue.remove(task)
                    self._queued_rows -= task.rows
                task.abandoned = True
            if not task.done.is_set():
                raise ServingError(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline exceeded while waiting in the "
                                   "batch queue")
        if task.error is not None:
            raise task.error
        assert task.result is not None
        return task.result

    def _work(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            try:
                self._execute(batch)
            except Exception as err:
                log.exception("batch of %d requests failed", len(batch))
                for task in batch:
                    if not task.done.is_set():
                        task.error = err
                        task.done.set()

    def _next_batch(self) -> list[Task] | None:
        """Waits for a task, then for companions (same key) until the batch is full or the oldest has waited
        ``batch_timeout_micros`` (its model's parameters); takes them off the queue."""
        with self._cv:
            while True:
                if self._closed and not self._queue:
                    return None
                if not self._queue:
                    self._cv.wait()
                    continue
                first = self._queue[0]
                batch, rows = self._companions(first)
                remaining = first.enqueued + first.options.batch_timeout_micros / 1e6 - time.monotonic()
                if rows >= first.options.max_batch_size or remaining <= 0 or self._closed:
                    for task in batch:
                        self._queue.remove(task)
                        self._queued_rows -= task.rows
                    return batch
                self._cv.wait(remaining)

    def _companions(self, first: Task) -> tuple[list[Task], int]:
        batch, rows = [first], first.rows
        for task in self._queue[1:]:
            if task.key == first.key and rows + task.rows <= first.options.max_batch_size:
                batch.append(task)
                rows += task.rows
        return batch, rows

    def _execute(self, batch: list[Task]) -> None:
        now = time.monotonic()
        live = []
        for task in batch:
            if task.deadline is not None and now >= task.deadline:
                task.error = ServingError(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline exceeded while waiting in "
                                          "the batch queue")
                task.done.set()
            else:
                live.append(task)
        if not live:
            return
        signature = live[0].signature
        self.metrics.batch_size.labels(live[0].servable.model).observe(sum(t.rows for t in live))
        try:
            outputs = signature.run(concatenate([t.inputs for t in live]))
            offset = 0
            for task in live:
                task.result = {name: value[offset:offset + task.rows] for name, value in outputs.items()}
                offset += task.rows
        except Exception as err:  # noqa: BLE001 - handed to the requests; one bad request must not sink the others
            if len(live) > 1:
                for task in live:
                    self._execute_alone(task)
                return
            live[0].error = err
        for task in live:
            task.done.set()

    @staticmethod
    def _execute_alone(task: Task) -> None:
        try:
            task.result = task.signature.run(task.inputs)
        except Exception as err:  # noqa: BLE001 - handed to the request
            task.error = err
        task.done.set()

    def stop(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        for worker in self._workers:
            worker.join(timeout=10)
