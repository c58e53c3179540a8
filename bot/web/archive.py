"""Reading the archive for the public: which pieces are listed, in what order, and what of them may be shown.

Everything the web shows goes through ``PieceView``, built here, so the privacy rule lives
in one place: a piece asked for in a direct or followers-only mention is listed, but its
request text, requester and links are dropped before anything reaches a template, feed or
JSON answer. A piece is public only once the bot's reply carrying it was posted (its job
is ``replied``) and while no operator has hidden it (``published``); a continuation names its
source piece only while that piece is public too. Lists use keyset pagination on
(created_at, id), which the ``ix_compositions_created`` index serves at any depth, where
OFFSET would scan; with a genre or model-version filter, ``ix_compositions_genre_created_id``
and ``ix_compositions_version_created_id`` (migration 0003) do the same.

Search by requester runs in two steps: the public handles that match (from a list the
site caches for a minute, or one scan of the ``ix_requests_requester_acct`` index), then
their pieces by that index. When a search matches many handles, walking the list
newest-first finds a page of them at once instead.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from urllib.parse import urlsplit

from sqlalchemy import Select, and_, false, or_, select
from sqlalchemy.orm import Session

from bot.db import Composition, MentionRequest, State
from bot.describe import CLEAR_KEY  # below this clarity the key heard is faint (the alt text names none)
from bot.request_text import asking_words, replay_text

PUBLIC_VISIBILITIES = frozenset({"public", "unlisted"})
PAGE_SIZE = 20
FEW_REQUESTERS = 50  # up to this many matching handles, look their pieces up by index
MAX_PAGE_SIZE = 100
ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-")

_REQUEST_COLUMNS = (
    MentionRequest.visibility,
    MentionRequest.plain_text,
    MentionRequest.spoiler_text,
    MentionRequest.requester_acct,
    MentionRequest.requester_display_name,
    MentionRequest.requester_url,
    MentionRequest.mention_url,
    MentionRequest.reply_url,
    MentionRequest.platform,
    MentionRequest.bot_account,
    MentionRequest.mentioned_at,
    MentionRequest.replied_at,
)


class BadCursor(ValueError):
    """A cursor that this archive did not hand out."""


def safe_url(url: str | None) -> str | None:
    """``url`` if it is a plain http(s) link, else None: a user's javascript: or data: URL never becomes a href."""
    if not url:
        return None
    url = url.strip()
    if any(c in url for c in "\x00\r\n\t<>\"'` "):
        return None
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    return url if parts.scheme.lower() in ("http", "https") and parts.netloc else None


def valid_id(piece_id: str) -> bool:
    return 0 < len(piece_id) <= 64 and set(piece_id) <= ID_CHARS


@dataclass(frozen=True)
class PieceView:
    """One piece as the public may see it (request fields are None unless the mention was public or unlisted)."""

    id: str
    genre: str
    model_version: str
    seed: int
    temperature: float
    top_p: float
    seconds_requested: float
    duration: float
    notes: int
    description: str | None
    created_at: datetime
    audio_ext: str | None
    audio_path: str | None  # relative to MEDIA_DIR; for the server's own use, never shown
    audio_mime: str | None
    has_pianoroll: bool
    parent_id: str | None  # the piece it continues, only while that piece is public
    bot_account: str | None
    shown: bool  # the request was public or unlisted
    asked_key: str | None = None  # the key asked for ("D minor"); None when none was
    asked_density: float | None = None  # the notes per second asked for
    key_followed: bool | None = None  # whether the model followed them (None: nothing asked, or an older piece)
    key_heard: str | None = None  # the key the notes are in (Krumhansl-Kessler), from the composer's summary
    key_clarity: float | None = None  # how clearly (-1..1; above CLEAR_KEY a listener hears it)
    pace_heard: float | None = None  # notes per second in the piece
    request_text: str | None = None
    content_warning: str | None = None  # the request's spoiler text, shown as such
    requester_acct: str | None = None
    requester_name: str | None = None
    requester_url: str | None = None
    mention_url: str | None = None
    reply_url: str | None = None
    platform: str | None = None
    pianoroll_path: str | None = None  # relative to MEDIA_DIR; for the server's own use (its size), never shown

    @property
    def cursor(self) -> str:
        return encode_cursor(self.created_at, self.id)

    @property
    def mood(self) -> str | None:
        """The mood and pace words that give this piece's temperature and density asked ("" at the
        defaults; None if none can)."""
        return asking_words(self.temperature, self.asked_density)

    @property
    def key_clear(self) -> bool:
        return self.key_clarity is None or self.key_clarity > CLEAR_KEY

    def ask_again(self) -> str:
        """What to post to get this piece again: same genre, seed, length, key and, through mood and
        pace words, temperature and density.

        When no mood words give the temperature exactly, the mention asks at the default one
        (the page says so).
        """
        who = f"@{self.bot_account} " if self.bot_account else ""
        again = replay_text(
            self.genre, self.seed, self.temperature, self.asked_key, self.asked_density, self.seconds_requested
        )
        return who + again


def piece_view(piece: Composition, request: object | None, public_parents: Collection[str] = ()) -> PieceView:
    """The public view of a piece; ``request`` is a row of ``_REQUEST_COLUMNS`` or None.

    ``public_parents``: the ids among the pieces' sources that are public; any other source
    (hidden, unpublished, deleted) is not named, not even by its id.
    """
    visibility = getattr(request, "visibility", None)
    shown = visibility in PUBLIC_VISIBILITIES
    audio_ext = piece.audio_path.rsplit(".", 1)[-1].lower() if piece.audio_path and "." in piece.audio_path else None
    summary = piece.summary if isinstance(piece.summary, dict) else {}
    base = dict(
        id=piece.id,
        genre=piece.genre,
        model_version=piece.model_version,
        seed=piece.seed,
        temperature=piece.temperature,
        top_p=piece.top_p,
        seconds_requested=piece.seconds_requested,
        duration=piece.duration,
        notes=piece.notes,
        description=piece.description,
        created_at=piece.created_at,
        audio_ext=audio_ext,
        audio_path=piece.audio_path,
        audio_mime=piece.audio_mime,
        has_pianoroll=bool(piece.pianoroll_path),
        pianoroll_path=piece.pianoroll_path,
        parent_id=piece.parent_id if piece.parent_id in public_parents else None,
        bot_account=getattr(request, "bot_account", None) or None,
        shown=shown,
        asked_key=piece.asked_key,
        asked_density=piece.asked_density,
        key_followed=piece.key_followed,
        key_heard=summary.get("key") if isinstance(summary.get("key"), str) else None,
        key_clarity=_number(summary.get("key_clarity")),
        pace_heard=_number(summary.get("notes_per_second")),
    )
    if not shown:
        return PieceView(**base)
    return PieceView(
        **base,
        request_text=request.plain_text,
        content_warning=request.spoiler_text or None,
        requester_acct=request.requester_acct,
        requester_name=request.requester_display_name or None,
        requester_url=safe_url(request.requester_url),
        mention_url=safe_url(request.mention_url),
        reply_url=safe_url(request.reply_url),
        platform=request.platform,
    )


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def encode_cursor(created_at: datetime, piece_id: str) -> str:
    raw = f"{created_at.astimezone(UTC).isoformat()}|{piece_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        stamp, piece_id = raw.split("|", 1)
        when = datetime.fromisoformat(stamp)
        if when.tzinfo is None or not valid_id(piece_id):
            raise BadCursor("malformed cursor")
        when = when.astimezone(UTC)  # near datetime's limits this overflows: a forged cursor
    except (binascii.Error, UnicodeDecodeError, ValueError, OverflowError) as exc:
        raise BadCursor("malformed cursor") from exc
    return when, piece_id


@dataclass(frozen=True)
class Filters:
    """What a list may be narrowed by; all optional."""

    genre: str | None = None
    model_version: str | None = None
    since: date | None = None
    until: date | None = None
    requester: str | None = None

    def normalized(self) -> Filters:
        def clean(text: str | None, limit: int) -> str | None:
            # NUL cannot be stored in PostgreSQL text, so it can match nothing: drop it.
            return (text or "").replace("\x00", "").strip()[:limit] or None

        requester = clean((self.requester or "").strip().lstrip("@"), 255)
        return Filters(
            clean(self.genre, 64),
            clean(self.model_version, 64),
            self.since,
            self.until,
            requester,
        )

    def params(self) -> dict[str, str]:
        """The filters as query parameters (for links to the next page)."""
        values = {
            "genre": self.genre,
            "model_version": self.model_version,
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
            "requester": self.requester,
        }
        return {k: v for k, v in values.items() if v}


def published(query: Select) -> Select:
    """``query`` (over compositions) narrowed to public pieces, joined to the request each answered.

    Public means published and not taken down: the bot's reply carrying the piece was posted
    (its job is ``replied``; a job that failed after composing told the requester "sorry"
    without the piece, so the piece stays unpublished) and no operator has hidden it.
    """
    return query.join(MentionRequest, MentionRequest.id == Composition.request_id).where(
        Composition.hidden == false(),
        Composition.audio_path.is_not(None),
        MentionRequest.state == State.REPLIED,
    )


def _listed() -> Select:
    return published(select(Composition, *_REQUEST_COLUMNS))


def public_ids(session: Session, piece_ids: Collection[str]) -> set[str]:
    """Those of ``piece_ids`` that are public pieces."""
    wanted = sorted({i for i in piece_ids if i and valid_id(i)})
    if not wanted:
        return set()
    return set(session.scalars(published(select(Composition.id)).where(Composition.id.in_(wanted))))


def _views(session: Session, rows: list) -> list[PieceView]:
    parents = public_ids(session, [row[0].parent_id for row in rows if row[0].parent_id])
    return [piece_view(row[0], row, parents) for row in rows]


def _filtered(query: Select, filters: Filters, handles: list[str] | None = None) -> Select:
    if filters.genre:
        query = query.where(Composition.genre == filters.genre)
    if filters.model_version:
        query = query.where(Composition.model_version == filters.model_version)
    if filters.since:
        query = query.where(Composition.created_at >= datetime.combine(filters.since, time(), UTC))
    if filters.until and filters.until < date.max:  # until the last representable day: no upper bound
        query = query.where(Composition.created_at < datetime.combine(filters.until + timedelta(days=1), time(), UTC))
    if handles is not None:  # only requesters who asked in public can be found by name
        public = MentionRequest.visibility.in_(sorted(PUBLIC_VISIBILITIES))
        query = query.where(
            Composition.request_id.in_(
                select(MentionRequest.id).where(MentionRequest.requester_acct.in_(handles), public)
            )
        )
    elif filters.requester:
        query = query.where(MentionRequest.visibility.in_(sorted(PUBLIC_VISIBILITIES)), _handle_like(filters.requester))
    return query


def _handle_like(text: str):
    return MentionRequest.requester_acct.ilike(f"%{_escape_like(text)}%", escape="\\")


def public_handles(session: Session) -> list[str]:
    """Every handle that asked in a public or unlisted mention (the searchable requesters)."""
    query = select(MentionRequest.requester_acct).where(MentionRequest.visibility.in_(sorted(PUBLIC_VISIBILITIES)))
    return sorted(set(session.scalars(query.distinct())))


def matching_handles(session: Session, text: str, known: list[str] | None = None) -> list[str] | None:
    """The public requesters' handles containing ``text``; None when there are more than FEW_REQUESTERS."""
    if known is not None:
        needle = text.lower()
        found = [h for h in known if needle in h.lower()]
        return found if len(found) <= FEW_REQUESTERS else None
    query = (
        select(MentionRequest.requester_acct)
        .where(MentionRequest.visibility.in_(sorted(PUBLIC_VISIBILITIES)), _handle_like(text))
        .distinct()
        .limit(FEW_REQUESTERS + 1)
    )
    handles = list(session.scalars(query))
    return handles if len(handles) <= FEW_REQUESTERS else None


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def list_query(filters: Filters, cursor: str | None, limit: int, handles: list[str] | None = None) -> Select:
    """Newest first, strictly after ``cursor``; one extra row tells whether there is a next page."""
    query = _filtered(_listed(), filters.normalized(), handles)
    if cursor:
        when, piece_id = decode_cursor(cursor)
        # created_at <= c first, so both backends bound the index scan; the OR breaks ties by id.
        query = query.where(
            Composition.created_at <= when,
            or_(Composition.created_at < when, and_(Composition.created_at == when, Composition.id < piece_id)),
        )
    return query.order_by(Composition.created_at.desc(), Composition.id.desc()).limit(limit + 1)


@dataclass(frozen=True)
class Page:
    pieces: list[PieceView]
    next_cursor: str | None


def list_pieces(
    session: Session,
    filters: Filters,
    cursor: str | None = None,
    limit: int = PAGE_SIZE,
    known_handles: Callable[[], list[str]] | None = None,
) -> Page:
    """A page of pieces; ``known_handles`` gives the (cached) public handles for a search by requester."""
    limit = max(1, min(limit, MAX_PAGE_SIZE))
    filters = filters.normalized()
    handles = None
    if filters.requester:
        handles = matching_handles(session, filters.requester, known_handles() if known_handles else None)
    if handles == []:
        return Page([], None)
    rows = session.execute(list_query(filters, cursor, limit, handles)).all()
    views = _views(session, rows[:limit])
    return Page(views, views[-1].cursor if len(rows) > limit else None)


def get_piece(session: Session, piece_id: str) -> PieceView | None:
    """One listed piece; None for unknown, hidden or unpublished pieces."""
    if not valid_id(piece_id):
        return None
    row = session.execute(_listed().where(Composition.id == piece_id)).first()
    return _views(session, [row])[0] if row else None


def listed_composition(session: Session, piece_id: str) -> Composition | None:
    """The row behind a listed piece (for its media files)."""
    if not valid_id(piece_id):
        return None
    return session.scalars(published(select(Composition)).where(Composition.id == piece_id)).first()


def archive_genres(session: Session) -> list[str]:
    return list(session.scalars(published(select(Composition.genre)).distinct().order_by(Composition.genre)))
