"""Prometheus metrics for the server, on the REST port at ``/monitoring/prometheus/metrics`` (TF Serving's path).

Why it exists: operators watch request rates, latencies and load failures per model, version and signature;
prometheus_client keeps the counters thread-safe and renders the text format every scraper understands.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """One registry per server (so tests can run several servers in one process)."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        labels = ("model", "version", "signature", "protocol", "code")
        self.requests = Counter("twotower_requests", "Requests by model, version, signature, protocol and status "
                                "code", labels, registry=self.registry)
        self.latency = Histogram("twotower_request_latency_seconds", "Request latency in seconds",
                                 ("model", "version", "signature", "protocol"), buckets=LATENCY_BUCKETS,
                                 registry=self.registry)
        self.load_failures = Counter("twotower_model_load_failures", "Model versions that failed to load",
                                     ("model", "version"), registry=self.registry)
        self.available = Gauge("twotower_model_versions_available", "Versions currently serving", ("model",),
                               registry=self.registry)
        self.batch_size = Histogram("twotower_batch_size", "Rows per executed batch (request batching)",
                                    ("model",), buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
                                    registry=self.registry)

    def request(self, model: str, version: int | str | None, signature: str, protocol: str, code: str,
                seconds: float) -> None:
        version = "" if version is None else str(version)
        self.requests.labels(model, version, signature, protocol, code).inc()
        self.latency.labels(model, version, signature, protocol).observe(seconds)

    def load_failure(self, model: str, version: int) -> None:
        self.load_failures.labels(model, str(version)).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
