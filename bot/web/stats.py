"""Archive statistics and their plots: pieces per day and per genre, time from mention to reply.

Counts are grouped in SQL; the plots are drawn server-side with matplotlib (Agg, no
display) as SVG, so the page needs no JavaScript, and the site caches both for a minute.
"""

from __future__ import annotations

import io
import statistics
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bot.db import PIECE_KINDS, Composition, MentionRequest, State
from bot.web.archive import published

DAYS = 30


@dataclass(frozen=True)
class Stats:
    total: int
    per_day: list[tuple[date, int]]  # the last DAYS days, oldest first, zeros included
    per_genre: list[tuple[str, int]]
    median_reply_seconds: float | None
    replies_measured: int
    generated_at: datetime = field(default_factory=lambda: datetime.now(UTC))


def collect(session: Session, now: datetime | None = None) -> Stats:
    now = now or datetime.now(UTC)
    total = session.scalar(published(select(func.count()).select_from(Composition))) or 0
    per_genre = session.execute(
        published(select(Composition.genre, func.count()).select_from(Composition))
        .group_by(Composition.genre)
        .order_by(func.count().desc())
    ).all()
    first_day = now.date() - timedelta(days=DAYS - 1)
    start = datetime.combine(first_day, datetime.min.time(), UTC)
    stamps = session.scalars(published(select(Composition.created_at)).where(Composition.created_at >= start))
    counts: dict[date, int] = {first_day + timedelta(days=i): 0 for i in range(DAYS)}
    for stamp in stamps:
        day = stamp.astimezone(UTC).date()
        if day in counts:
            counts[day] += 1
    pairs = session.execute(
        select(MentionRequest.mentioned_at, MentionRequest.replied_at).where(
            MentionRequest.state == State.REPLIED,
            MentionRequest.kind.in_(PIECE_KINDS),
            MentionRequest.replied_at.is_not(None),
            MentionRequest.replied_at >= start,
        )
    ).all()
    waits = [(replied - mentioned).total_seconds() for mentioned, replied in pairs]
    return Stats(
        total=total,
        per_day=sorted(counts.items()),
        per_genre=[(genre, count) for genre, count in per_genre],
        median_reply_seconds=statistics.median(waits) if waits else None,
        replies_measured=len(waits),
    )


def _figure(width: float = 7.0, height: float = 3.0):
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100)
    axes = figure.add_subplot()
    axes.spines[["top", "right"]].set_visible(False)
    return figure, axes


def _svg(figure) -> bytes:
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="svg", metadata={"Date": None})
    return buffer.getvalue()


def per_day_svg(stats: Stats) -> bytes:
    figure, axes = _figure()
    days = [d for d, _ in stats.per_day]
    axes.bar(days, [n for _, n in stats.per_day], color="#3b6ea5", width=0.8)
    axes.set_ylabel("pieces")
    axes.set_title(f"Pieces per day, last {DAYS} days (UTC)")
    figure.autofmt_xdate()
    return _svg(figure)


def per_genre_svg(stats: Stats) -> bytes:
    figure, axes = _figure(height=max(1.6, 0.5 * len(stats.per_genre) + 1))
    genres = [g for g, _ in stats.per_genre][::-1]
    axes.barh(genres, [n for _, n in stats.per_genre][::-1], color="#a5563b")
    axes.set_xlabel("pieces")
    axes.set_title("Pieces per genre")
    return _svg(figure)
