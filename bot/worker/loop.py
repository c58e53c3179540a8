"""`bot run`'s loop: a tick whenever the stream brings a mention, a poll on a schedule, due jobs in between.

Without a stream (X, BOT_STREAM=false, a server without streaming, or a stream that is
down) it polls every ``poll_seconds``; while the stream is up, polling is only the safety
net (``bot_catchup_seconds``), plus once after each (re)connect to catch up on the gap.
Jobs waiting for a retry are advanced at least every ``poll_seconds`` either way.
"""

from __future__ import annotations

import logging
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
    next_poll = time.monotonic()  # catch up at once on start
    while not stopping.is_set():
        wake.clear()  # before draining: a mention arriving from here on wakes the next wait
        started = time.monotonic()
        mentions = stream.drain() if stream is not None else []
        poll = started >= next_poll or (stream is not None and stream.take_gap())
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
            streaming = stream is not None and stream.up
            next_poll = started + (settings.bot_catchup_seconds if streaming else interval)
        until = min(next_poll, started + interval)
        wake.wait(max(0.0, until - time.monotonic()))
    return None
