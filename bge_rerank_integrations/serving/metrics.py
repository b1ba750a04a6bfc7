"""Prometheus metrics of one server, in their own registry (several apps may live in one process)."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

#: Paths counted under their own name; anything else is counted as "other".
KNOWN_PATHS = frozenset({"/rerank", "/v1/rerank", "/v2/rerank", "/health", "/info", "/metrics"})


class Metrics:
    """Requests, pairs, latency and batch-size histograms, and queue depth.

    >>> metrics = Metrics(); metrics.pairs.inc(3); b"bge_rerank_pairs_total 3.0" in metrics.render()[0]
    True
    """

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "bge_rerank_requests", "HTTP requests by path and status code", ["path", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "bge_rerank_request_seconds",
            "Time from request to response, by path",
            ["path"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=self.registry,
        )
        self.pairs = Counter("bge_rerank_pairs", "(query, document) pairs scored", registry=self.registry)
        self.cancelled_pairs = Counter(
            "bge_rerank_cancelled_pairs", "Queued pairs dropped because their client went away", registry=self.registry
        )
        self.batch_pairs = Histogram(
            "bge_rerank_batch_pairs",
            "Pairs per model call (requests merged by dynamic batching)",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096),
            registry=self.registry,
        )
        self.batch_requests = Histogram(
            "bge_rerank_batch_requests",
            "Requests per model call",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
            registry=self.registry,
        )
        self.queue_pairs = Gauge("bge_rerank_queue_pairs", "Pairs waiting for the model", registry=self.registry)

    def observe_request(self, path: str, status: int, seconds: float) -> None:
        label = path if path in KNOWN_PATHS else "other"
        self.requests.labels(label, str(status)).inc()
        self.latency.labels(label).observe(seconds)

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        return generate_latest(self.registry), self.content_type
