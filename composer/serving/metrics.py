"""Prometheus metrics of the composer service, in a registry of its own.

One registry per app (not the process-wide default) so that several apps in one process,
as in tests and benchmarks, do not collide over metric names.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class ServiceMetrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "composer_requests", "HTTP requests answered, by route and status code", ["route", "status"], registry=r
        )
        self.latency = Histogram(
            "composer_request_seconds", "Time to answer a request", ["route"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.batch_size = Histogram(
            "composer_batch_size", "Streams sampled together in each step", ["genre"], buckets=BATCH_BUCKETS, registry=r
        )
        self.events = Counter(
            "composer_events", "Events sampled (rate() gives events per second)", ["genre"], registry=r
        )
        self.compositions = Counter("composer_compositions", "Pieces finished", ["genre"], registry=r)
        self.queue_depth = Gauge("composer_queue_depth", "Requests waiting to join a batch", ["genre"], registry=r)
        self.active = Gauge("composer_active_streams", "Streams in the running batch", ["genre"], registry=r)
        self.model_loaded = Gauge("composer_model_loaded", "1 once the genre's model is loaded", ["genre"], registry=r)
        self.reloads = Counter("composer_model_reloads", "Models reloaded after a promotion", ["genre"], registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
