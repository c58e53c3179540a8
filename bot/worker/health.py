"""The worker's health and Prometheus metrics, served by ``bot run --metrics-port``.

Like the composer service's metrics (composer/serving/metrics.py), the registry is the
worker's own, so several workers in one process (tests) never collide. ``/healthz`` is a
liveness check: 200 while the loop shows progress (a tick began or ended, or a job passed a
checkpoint) within ``stale_after`` seconds, 503 once it has not (a hung platform call or a
deadlocked tick), so Kubernetes restarts the pod and the job's lease lets another take it.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from bot.worker.base import TickReport

TICK_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
OUTCOMES = ("fetched", "stored", "replied", "failed", "skipped", "retried", "deferred")
STAGES = ("notice", "parse", "compose", "render", "upload", "media", "post")  # the reply's stages, in order
STAGE_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 7.5, 10, 15, 30, 60, 120, 300)
STREAM_STATES = ("connecting", "up", "down", "off", "stopped")


class WorkerHealth:
    """Counts what each tick did and says whether the loop is alive."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, stale_after: float, clock: Callable[[], float] = time.monotonic):
        self.stale_after, self.clock = stale_after, clock
        self.registry = r = CollectorRegistry()
        self.ticks = Counter("bot_ticks", "Ticks run, by result (ok or error)", ["result"], registry=r)
        self.tick_seconds = Histogram("bot_tick_seconds", "Time a tick took", buckets=TICK_BUCKETS, registry=r)
        self.mentions = Counter(
            "bot_mentions",
            "Mentions and jobs by what a tick did with them (fetched, stored, replied, failed, skipped, "
            "retried, deferred)",
            ["outcome"],
            registry=r,
        )
        self.checkpoints = Counter("bot_job_steps", "Job steps passed, by checkpoint", ["step"], registry=r)
        self.last_tick = Gauge("bot_last_tick_end_timestamp_seconds", "Unix time the last tick ended", registry=r)
        self.in_tick = Gauge("bot_tick_in_progress", "1 while a tick runs", registry=r)
        self.stages = Histogram(
            "bot_stage_seconds",
            "Seconds each stage of a reply took: notice (mention to stored), parse, compose, render, upload, "
            "media (the server processing the upload), post",
            ["stage"],
            buckets=STAGE_BUCKETS,
            registry=r,
        )
        self.stream_up = Gauge("bot_stream_up", "1 while the mention stream is connected; 0 while polling", registry=r)
        self.stream_state = Gauge(
            "bot_stream_state", "The mention stream's state (1 for the current one)", ["state"], registry=r
        )
        self.stream_connects = Counter("bot_stream_connects", "Times the mention stream (re)connected", registry=r)
        for stage in STAGES:
            self.stages.labels(stage)
        self.stream: str = "polling"  # no stream: BOT_STREAM off, or a platform without one (X)
        for result in ("ok", "error"):
            self.ticks.labels(result)
        for outcome in OUTCOMES:
            self.mentions.labels(outcome)
        self._progress = clock()
        self._lock = threading.Lock()

    def _alive(self) -> None:
        with self._lock:
            self._progress = self.clock()

    def tick_started(self) -> None:
        self.in_tick.set(1)
        self._alive()

    def tick_ended(self, seconds: float, report: TickReport | None) -> None:
        """One tick's end; ``report`` None when it raised."""
        self.in_tick.set(0)
        self.tick_seconds.observe(seconds)
        self.ticks.labels("ok" if report is not None else "error").inc()
        self.last_tick.set(time.time())
        if report is not None:
            for outcome in OUTCOMES:
                self.mentions.labels(outcome).inc(getattr(report, outcome))
        self._alive()

    def passed(self, checkpoint: str) -> None:
        """The worker's checkpoint hook: a job moved on, so the loop is alive inside a long tick."""
        self.checkpoints.labels(checkpoint).inc()
        self._alive()

    def stage(self, stage: str, seconds: float) -> None:
        """The worker's stage hook: one stage of a reply took ``seconds``."""
        self.stages.labels(stage).observe(seconds)

    def stream_changed(self, state: str) -> None:
        """The mention stream's hook: its new state (a stream that is down is not unhealthy: polling goes on)."""
        self.stream = str(state)
        self.stream_up.set(1 if self.stream == "up" else 0)
        for known in STREAM_STATES:
            self.stream_state.labels(known).set(1 if known == self.stream else 0)
        if self.stream == "up":
            self.stream_connects.inc()

    def status(self) -> tuple[bool, dict[str, object]]:
        with self._lock:
            quiet = self.clock() - self._progress
        healthy = quiet <= self.stale_after
        return healthy, {
            "status": "ok" if healthy else "stalled",
            "seconds_since_progress": round(quiet, 1),
            "stream": self.stream,
        }

    def render(self) -> bytes:
        return generate_latest(self.registry)


def serve(health: WorkerHealth, host: str, port: int) -> ThreadingHTTPServer:
    """Serve ``/healthz`` and ``/metrics`` from a daemon thread; the caller shuts the server down."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self._answer(body=True)

        def do_HEAD(self) -> None:
            self._answer(body=False)

        def _answer(self, body: bool) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/healthz":
                healthy, detail = health.status()
                payload, status, mime = json.dumps(detail).encode(), 200 if healthy else 503, "application/json"
            elif path == "/metrics":
                payload, status, mime = health.render(), 200, health.content_type
            else:
                payload, status, mime = b'{"detail": "not found"}', 404, "application/json"
            self.send_response(status)
            self.send_header("Content-Type", mime)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if body:
                self.wfile.write(payload)

        def log_message(self, format: str, *args: object) -> None:  # probes every few seconds: no log line each
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="bot-health", daemon=True).start()
    return server
