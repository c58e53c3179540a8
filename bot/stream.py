"""Mentions the moment they arrive: a platform's stream, listened to from a thread, reconnected with backoff.

The stream only makes the bot quicker; it is never the record. Each (re)connection sets
``gap``, so the loop polls once with the stored cursor and picks up whatever arrived while
the stream was down; the job table's unique key keeps a mention seen twice (stream and poll,
or two workers' streams) one job. A server without streaming (``StreamingOff``) leaves the
bot polling, and the stream is tried again after ``off_retry`` seconds.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from collections.abc import Callable
from enum import StrEnum

from bot.platforms.base import ConfigurationError, Mention, StreamingOff

log = logging.getLogger("bot.stream")

# listen(on_mention, on_connected, stop): blocks while the stream is open; returns or raises when it ends
Listen = Callable[[Callable[[Mention], None], Callable[[], None], threading.Event], None]


class StreamState(StrEnum):
    CONNECTING = "connecting"
    UP = "up"
    DOWN = "down"  # dropped or refused: reconnecting after the backoff
    OFF = "off"  # the server has no streaming: polling only
    STOPPED = "stopped"


class MentionStream:
    """Runs ``listen`` in a daemon thread, queueing its mentions and setting ``wake`` for each one."""

    def __init__(
        self,
        listen: Listen,
        wake: threading.Event,
        *,
        backoff: tuple[float, float] = (1.0, 60.0),
        off_retry: float = 600.0,
        healthy_after: float = 30.0,
        on_state: Callable[[StreamState], None] | None = None,
    ):
        self.listen, self.wake = listen, wake
        self.backoff_min, self.backoff_max = backoff
        self.off_retry, self.healthy_after = off_retry, healthy_after
        self.on_state = on_state
        self.mentions: queue.SimpleQueue[Mention] = queue.SimpleQueue()
        self.gap = threading.Event()  # set on each connect: poll once to catch up on what the stream missed
        self.state = StreamState.CONNECTING
        self.connects = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def up(self) -> bool:
        return self.state is StreamState.UP

    def start(self) -> MentionStream:
        self._thread = threading.Thread(target=self._run, name="bot-stream", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 1.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._set(StreamState.STOPPED)

    def drain(self) -> list[Mention]:
        """The mentions received since the last call, in arrival order."""
        found = []
        while True:
            try:
                found.append(self.mentions.get_nowait())
            except queue.Empty:
                return found

    def take_gap(self) -> bool:
        """Whether the stream (re)connected since the last call: the caller should poll now."""
        if self.gap.is_set():
            self.gap.clear()
            return True
        return False

    # --- the thread ----------------------------------------------------------------

    def _set(self, state: StreamState) -> None:
        if state is not self.state and state is not StreamState.CONNECTING:
            quiet = state in (StreamState.UP, StreamState.OFF, StreamState.STOPPED)
            log.log(logging.INFO if quiet else logging.WARNING, "stream %s", state)
        self.state = state
        if self.on_state is not None:
            self.on_state(state)

    def _connected(self) -> None:
        self.connects += 1
        self._set(StreamState.UP)
        self.gap.set()
        self.wake.set()

    def _mention(self, mention: Mention) -> None:
        self.mentions.put(mention)
        self.wake.set()

    def _run(self) -> None:
        delay = self.backoff_min
        while not self._stop.is_set():
            self._set(StreamState.CONNECTING)
            opened = time.monotonic()
            try:
                self.listen(self._mention, self._connected, self._stop)
                reason = "closed by the server"
            except StreamingOff as exc:
                self._set(StreamState.OFF)
                log.info("the server has no streaming (%s); polling, and trying again in %g s", exc, self.off_retry)
                self._stop.wait(self.off_retry)
                continue
            except ConfigurationError as exc:
                reason, delay = f"refused: {exc}", self.backoff_max
            except Exception as exc:  # a drop, a timeout, a garbled event: all end in a reconnect
                reason = f"{type(exc).__name__}: {exc}"
            if self._stop.is_set():
                break
            if time.monotonic() - opened >= self.healthy_after:
                delay = self.backoff_min  # it had been up a while: this is a fresh drop, not a failing server
            self._set(StreamState.DOWN)
            wait = delay * random.uniform(0.8, 1.2)
            log.warning("stream ended (%s); reconnecting in %.1f s", reason, wait)
            self.wake.set()  # the loop polls at its own interval while the stream is down
            self._stop.wait(wait)
            delay = min(self.backoff_max, delay * 2)
