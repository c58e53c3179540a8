"""`bot run`'s loop: a tick whenever the stream brings a mention, a poll on a schedule, due jobs in between.

Without a stream (X, BOT_STREAM=false, a server without streaming, or a stream that is
down) it polls every ``poll_seconds``; while the stream is up, polling is only the safety
net (``bot_catchup_seconds``), plus once after each (re)connect to catch up on the gap; a read that
failed (that catch-up, or the stream's mentions lost to a composer outage) is polled for again at
``poll_seconds``.
Jobs waiting for a retry are advanced at least every ``poll_seconds`` either way.
"""

from __future__ import annotations

import logging
import math
import threading
import time

from sqlalchemy.exc import SQLAlchemyError

from bot.platforms.base import ConfigurationError, TransientError
from bot.stream import MentionStream
from bot.worker import Worker
from bot.worker.base import TickReport
from bot.worker.health import WorkerHealth

log = logging.getLogger("bot")


def first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def run_loop(
    worker: Worker,
    health: WorkerHealth,
    stopping: threading.Event,
    wake: threading.Event,
    stream: MentionStream | None,
) -> str | None:
    """Tick until ``stopping`` is set (``wake`` is set with it, to end a wait); the configuration error
    that stopped the loop, if one did."""
    settings = worker.settings
    interval = settings.poll_seconds
    last_poll = -math.inf  # catch up at once on start
    behind = True  # a poll is owed at the polling interval: on start, and after reading mentions failed
    while not stopping.is_set():
        wake.clear()  # before draining: a mention arriving from here on wakes the next wait
        started = time.monotonic()
        mentions = stream.drain() if stream is not None else []
        gap = stream is not None and stream.take_gap()  # always taken: a gap left set would poll twice
        poll = gap or started >= last_poll + _poll_every(settings.bot_catchup_seconds, interval, stream, behind)
        health.tick_started()
        report: TickReport | None = None
        try:
            report = worker.tick(poll=poll, mentions=mentions)
        except ConfigurationError as exc:
            stopping.set()
            health.tick_ended(time.monotonic() - started, None)
            return str(exc)
        except SQLAlchemyError as exc:  # an outage: one line a tick; the jobs it held resume next time
            log.warning("tick failed: the database: %s", first_line(exc))
        except TransientError as exc:  # the platform is down: one line a tick, nothing lost
            log.warning("tick failed: %s", exc)
        except Exception:  # one bad tick must not stop the loop; the jobs it held resume next time
            log.exception("tick failed")
        health.tick_ended(time.monotonic() - started, report)
        if poll:
            last_poll = started
        # a failed read (a gap's catch-up, or the stream's mentions lost with a composer outage) is polled
        # for again at the polling interval: the catch-up interval is only for a stream that missed nothing
        behind = (behind and not poll) or report is None or report.unread
        every = _poll_every(settings.bot_catchup_seconds, interval, stream, behind)
        wake.wait(max(0.0, min(last_poll + every, started + interval) - time.monotonic()))
    return None


def _poll_every(catchup: float, interval: float, stream: MentionStream | None, behind: bool) -> float:
    """Seconds between polls: the catch-up interval while the stream is up and nothing is owed; else the
    polling interval (no stream, a stream that is down or off, a read that failed)."""
    return catchup if stream is not None and stream.up and not behind else interval
