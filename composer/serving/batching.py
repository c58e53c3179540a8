"""Continuous batching: one thread per genre steps a BatchSampler that requests join and leave.

A request that arrives while others are being sampled joins the batch at the next step
and leaves as soon as its piece is long enough, so nobody waits for a whole batch to
finish. The stepping runs in a thread of its own: torch releases the GIL in its kernels,
which leaves the event loop free to take requests meanwhile.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from composer.contract import ComposerUnavailable, CompositionRejected
from composer.models.store import SERVING_ENGINE, LoadedModel, current_key, load_current
from composer.sampling.sample import BatchSampler, SampleRequest, Stream
from composer.serving.catalog import resolve_genre, served_genres
from composer.serving.metrics import ServiceMetrics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sampled:
    tokens: np.ndarray
    model_version: str
    controlled: bool = False
    """Whether the model followed the request's key and density."""
    log_likelihood: float = 0.0
    """Per event, under the model: one part of a candidate's musicality."""


@dataclass(eq=False)
class PendingPiece:
    """A piece asked for: queued for its genre's batch, then sampled in it; its future resolves to Sampled."""

    request: SampleRequest
    future: Future = field(default_factory=Future)
    submitted: float = field(default_factory=time.monotonic)
    stream: Stream | None = None
    cancelled: bool = False


class QueueFull(ComposerUnavailable):
    def __init__(self, message: str, retry_after: int):
        super().__init__(message, 503)
        self.retry_after = retry_after


class GenreBatcher:
    """Owns one genre's model and its running batch; thread-safe ``submit`` and ``cancel``.

    ``max_batch=1`` turns batching off (one piece at a time), for comparison. A newly
    promoted model (CURRENT changed, or ``request_reload``) is loaded once the running
    batch drains; requests that arrive meanwhile wait in the queue.
    """

    def __init__(
        self,
        genre: str,
        models_dir: Path,
        *,
        device: str = "auto",
        engine: str = SERVING_ENGINE,
        max_batch: int = 64,
        queue_limit: int = 256,
        metrics: ServiceMetrics | None = None,
        reload_check_s: float = 1.0,
    ):
        if max_batch < 1 or queue_limit < 0:
            raise ValueError("max_batch must be at least 1 and queue_limit at least 0")
        self.genre, self.models_dir, self.device, self.engine = genre, models_dir, device, engine
        self.max_batch, self.queue_limit, self.reload_check_s = max_batch, queue_limit, reload_check_s
        self.error: str | None = None
        self._cond = threading.Condition()
        self._pending: deque[PendingPiece] = deque()
        self._cancels: deque[PendingPiece] = deque()
        self._running: dict[int, PendingPiece] = {}  # id(stream) -> piece; the batcher thread's own
        self._model: LoadedModel | None = None
        self._batch: BatchSampler | None = None
        self._reload_wanted = False
        self._failed_key: tuple[int, str] | None = None
        self._next_check = 0.0
        self._stop = False
        self._service_s = 1.0  # moving average of submit -> done, for Retry-After
        m = metrics or ServiceMetrics()
        self._m_batch, self._m_events = m.batch_size.labels(genre), m.events.labels(genre)
        self._m_done, self._m_queue = m.compositions.labels(genre), m.queue_depth.labels(genre)
        self._m_active, self._m_loaded = m.active.labels(genre), m.model_loaded.labels(genre)
        self._m_reloads = m.reloads.labels(genre)
        self._thread = threading.Thread(target=self._run, name=f"composer-{genre}", daemon=True)

    # -- any thread --------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join(timeout)

    @property
    def loaded(self) -> bool:
        return self._model is not None

    @property
    def version(self) -> str | None:
        return self._model.version if self._model else None

    @property
    def queue_depth(self) -> int:
        return len(self._pending)

    @property
    def active(self) -> int:
        return len(self._running)

    def submit(self, request: SampleRequest) -> PendingPiece:
        """Queue a request to join the batch; QueueFull when the queue is at its limit."""
        piece = PendingPiece(request)
        with self._cond:
            if self._stop:
                raise ComposerUnavailable("the composer is shutting down")
            if len(self._pending) >= self.queue_limit:
                raise QueueFull(f"too many requests for {self.genre!r}: try again shortly", self._retry_after())
            self._pending.append(piece)
            self._m_queue.set(len(self._pending))
            self._cond.notify()
        return piece

    def cancel(self, piece: PendingPiece) -> None:
        """Give up on a piece (timed out, client gone): dropped from the queue, or from the batch at its next step."""
        piece.cancelled = True
        with self._cond:
            try:
                self._pending.remove(piece)
                self._m_queue.set(len(self._pending))
            except ValueError:
                self._cancels.append(piece)
            self._cond.notify()

    def request_reload(self) -> None:
        self._reload_wanted = True
        with self._cond:
            self._cond.notify()

    def _retry_after(self) -> int:
        waves = (len(self._pending) + 1) / self.max_batch
        return int(min(max(math.ceil(self._service_s * waves), 1), 120))

    # -- the batcher thread ------------------------------------------------------------

    def _run(self) -> None:
        self._load()
        while True:
            with self._cond:
                while not (self._stop or self._pending or self._running or self._cancels):
                    if not self._cond.wait(self.reload_check_s):
                        break  # idle: look for a promoted model now and then
                if self._stop:
                    break
            self._apply_cancels()
            self._check_promotion()
            if self._model is None:
                self._fail_pending(ComposerUnavailable(f"no model loaded for {self.genre!r}: {self.error}"))
                continue
            self._admit()
            if self._running:
                self._step()
        self._fail_pending(ComposerUnavailable("the composer is shutting down"))
        for piece in self._running.values():
            piece.future.set_exception(ComposerUnavailable("the composer is shutting down"))
        self._running.clear()

    def _load(self) -> None:
        reloading = self._model is not None
        try:
            model = load_current(self.genre, self.models_dir, self.device, self.engine)
        except Exception as exc:  # a half-copied or missing model must not kill the batcher
            self.error = f"{type(exc).__name__}: {exc}"
            self._failed_key = current_key(self.genre, self.models_dir)
            log.error("genre %s: could not load its model: %s", self.genre, self.error)
        else:
            self._model, self._batch, self.error, self._failed_key = model, BatchSampler(model.sampler), None, None
            self._m_loaded.set(1)
            if reloading:
                self._m_reloads.inc()
            log.info("genre %s: model %s loaded on %s", self.genre, model.version, model.sampler.device)
        self._reload_wanted = False

    def _check_promotion(self) -> None:
        now = time.monotonic()
        if now >= self._next_check:
            self._next_check = now + self.reload_check_s
            key = current_key(self.genre, self.models_dir)
            if key != self._failed_key and (self._model is None or key != self._model.key):
                self._reload_wanted = True
        if self._reload_wanted and not self._running:
            self._load()

    def _fail_pending(self, error: Exception) -> None:
        with self._cond:
            waiting, self._pending = list(self._pending), deque()
            self._m_queue.set(0)
        for piece in waiting:
            if piece.future.set_running_or_notify_cancel():
                piece.future.set_exception(error)

    def _apply_cancels(self) -> None:
        while self._cancels:
            piece = self._cancels.popleft()
            if piece.stream is not None and id(piece.stream) in self._running:
                self._batch.cancel(piece.stream)

    def _admit(self) -> None:
        if self._reload_wanted:
            return  # let the batch drain so the new model can take over
        while len(self._running) < self.max_batch:
            with self._cond:
                if not self._pending:
                    break
                piece = self._pending.popleft()
                self._m_queue.set(len(self._pending))
            if piece.cancelled or not piece.future.set_running_or_notify_cancel():
                continue
            try:
                piece.stream = self._batch.add(self._model.sampler.fit(piece.request))
            except ValueError as exc:
                piece.future.set_exception(CompositionRejected(str(exc)))
                continue
            except Exception as exc:
                log.exception("genre %s: priming failed", self.genre)
                piece.future.set_exception(ComposerUnavailable(f"sampling failed: {exc}", 500))
                continue
            self._running[id(piece.stream)] = piece
        self._m_active.set(len(self._running))

    def _step(self) -> None:
        size = self._batch.active
        try:
            finished = self._batch.step()
        except Exception as exc:  # out of memory and the like: fail this batch, keep serving
            log.exception("genre %s: a sampling step failed", self.genre)
            for piece in self._running.values():
                piece.future.set_exception(ComposerUnavailable(f"sampling failed: {exc}", 500))
            self._running.clear()
            self._batch = BatchSampler(self._model.sampler)
            return
        self._m_batch.observe(size)
        self._m_events.inc(size)
        now = time.monotonic()
        for stream in finished:
            piece = self._running.pop(id(stream))
            if not piece.cancelled:
                controlled = stream.request.controls is not None
                piece.future.set_result(
                    Sampled(stream.result(), self._model.version, controlled, stream.log_likelihood_per_event)
                )
                self._m_done.inc()
                self._service_s = 0.9 * self._service_s + 0.1 * (now - piece.submitted)
        if finished:
            self._m_active.set(len(self._running))


class BatcherPool:
    """The genre batchers of one service: started for every served genre, or on first use."""

    def __init__(self, models_dir: Path, genres_dir: Path, **batcher_options):
        self.models_dir, self.genres_dir = models_dir, genres_dir
        self.batcher_options = batcher_options
        self._batchers: dict[str, GenreBatcher] = {}
        self._lock = threading.Lock()
        self._closed = False

    def start(self) -> None:
        for genre in served_genres(self.models_dir):
            self.batcher(genre)

    def batcher(self, genre: str) -> GenreBatcher:
        """The genre's batcher, started if need be; CompositionRejected (404) for a genre without a model."""
        found = self._batchers.get(genre)
        if found is not None:
            return found
        resolve_genre(genre, self.models_dir, self.genres_dir)
        with self._lock:
            if self._closed:
                raise ComposerUnavailable("the composer is shutting down")
            if genre not in self._batchers:
                batcher = GenreBatcher(genre, self.models_dir, **self.batcher_options)
                batcher.start()
                self._batchers[genre] = batcher
            return self._batchers[genre]

    @property
    def batchers(self) -> dict[str, GenreBatcher]:
        return dict(self._batchers)

    def reload(self) -> None:
        for batcher in self.batchers.values():
            batcher.request_reload()

    def stop(self) -> None:
        with self._lock:
            self._closed = True
            batchers = list(self._batchers.values())
        for batcher in batchers:
            batcher.stop()
