"""Shared pieces of the archive web tests: an archive filled through the bot's own code, a live server."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path

import uvicorn

from bot.config import load_settings
from bot.db import Composition, Kind, MentionRequest, State, make_engine, session_factory, transaction
from bot.local_mastodon import free_port
from bot.media import MediaStore
from bot.migrate import upgrade
from bot.web import create_app
from composer.codec.events import Note

ADMIN_TOKEN = "operator-s3cret-token-for-the-tests"
NOW = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=1)  # stats look 30 days back
HOSTILE_TEXT = '@band <script>alert("x")</script> "onmouseover=alert(1) x=" folk please'
HOSTILE_NAME = '"><img src=x onerror=alert(2)>'
PRIVATE_TEXT = "@band secret birthday song for my sister Wilhelmina"

GENRE_CARDS = [
    {
        "name": "folk",
        "current_version": "v1",
        "versions": ["v1"],
        "description": "Folk tunes from the Nottingham Music Database.",
        "license": "GPL-3.0",
        "card": {
            "genre": "folk",
            "version": "v1",
            "license": "GPL-3.0",
            "validation_nll": 1.234,
            "date": "2026-11-01T00:00:00+00:00",
            "training": {"data": [{"genre": "folk", "sources": ["nottingham"], "license": "GPL-3.0"}]},
        },
    },
    {
        "name": "jazz",
        "current_version": None,
        "versions": [],
        "description": "<b>not yet</b>",
        "license": "",
        "card": None,
    },
]


@dataclass
class GenreStub:
    name: str
    current_version: str | None
    versions: list[str] = field(default_factory=list)
    card: dict | None = None
    description: str = ""
    license: str = ""


def genre_catalog() -> list[GenreStub]:
    return [GenreStub(**g) for g in GENRE_CARDS]


@cache
def sample_media(workdir: Path) -> tuple[bytes, bytes, bytes]:
    """A real short MIDI, MP3 and piano roll, made once with the composer's own code (FluidSynth, matplotlib)."""
    from composer.audio.pianoroll import pianoroll_png
    from composer.audio.render import render_audio
    from composer.codec.midi import midi_bytes

    notes = [Note(60 + (i * 5) % 12, 80, i * 0.25, i * 0.25 + 0.4) for i in range(8)]
    workdir.mkdir(parents=True, exist_ok=True)  # render_audio writes only into a folder that exists
    audio = render_audio(notes, workdir / "sample.mp3", format="mp3").path
    return midi_bytes(notes), Path(audio).read_bytes(), pianoroll_png(notes, "folk · seed 1")


@dataclass
class Piece:
    id: str
    genre: str
    model_version: str
    created_at: datetime
    visibility: str
    text: str
    acct: str
    seed: int


def default_pieces() -> list[dict]:
    """30 pieces over 10 days: three genres, two versions, four visibilities, two hostile requests."""
    specs = []
    genres = ("folk", "classical", "pop")
    visibilities = ("public", "unlisted", "private", "direct")
    for i in range(30):
        specs.append(
            dict(
                genre=genres[i % 3],
                model_version="v2" if i >= 20 else "v1",
                created_at=NOW - timedelta(hours=8 * (30 - i)),
                visibility=visibilities[i % 4],
                text=f"@band {genres[i % 3]} number {i}!",
                acct=f"user{i % 5}@example.social",
            )
        )
    specs[29] |= dict(visibility="public", text=HOSTILE_TEXT, acct="mallory@evil.example", name=HOSTILE_NAME)
    specs[29] |= dict(requester_url="javascript:alert(3)", mention_url="JaVaScRiPt:alert(4)")
    specs[28] |= dict(visibility="direct", text=PRIVATE_TEXT, acct="wilhelmina.fan@example.social")
    return specs


def fill_archive(url: str, media_dir: Path, specs: list[dict], sample_dir: Path) -> list[Piece]:
    """The rows and files the worker would leave for each replied mention (bot.db models, bot.media.MediaStore).

    Optional spec keys: ``spoiler`` (the mention's content warning), ``temperature``, ``parent``
    (the index of an earlier spec this piece continues: a "more"), ``state`` (another job state
    than replied: a piece whose reply is not out, as a job stopped after rendering leaves it),
    ``key`` and ``density`` (asked for), ``key_followed``, ``summary`` (the composer's, as stored).
    """
    midi, audio, roll = sample_media(sample_dir)
    upgrade(url)
    engine = make_engine(url)
    sessions = session_factory(engine)
    store = MediaStore(media_dir)
    pieces = []
    for i, spec in enumerate(specs):
        piece_id = f"p{i:03d}{spec['genre'][:3]}0000{i:04d}"
        created = spec["created_at"]
        replied = spec.get("state", State.REPLIED)
        with transaction(sessions) as session:
            request = MentionRequest(
                platform="mastodon",
                bot_account="band",
                mention_id=str(1000 + i),
                idempotency_key=f"band-mastodon-{1000 + i}",
                mention_url=spec.get("mention_url", f"https://example.social/@someone/{1000 + i}"),
                requester_id=str(i % 5),
                requester_acct=spec["acct"],
                requester_display_name=spec.get("name", spec["acct"].split("@")[0].title()),
                requester_url=spec.get("requester_url", f"https://example.social/@{spec['acct'].split('@')[0]}"),
                text=f"<p>{spec['text']}</p>",
                plain_text=spec["text"],
                visibility=spec["visibility"],
                spoiler_text=spec.get("spoiler", ""),
                kind=Kind.MORE if "parent" in spec else Kind.COMPOSE,
                genre=spec["genre"],
                seconds=30.0,
                temperature=spec.get("temperature", 1.0),
                top_p=0.95,
                seed=7000 + i,
                key=spec.get("key"),
                density=spec.get("density"),
                state=replied,
                next_attempt_at=created,
                mentioned_at=created - timedelta(seconds=30 + i),
                received_at=created,
                replied_at=created + timedelta(seconds=15) if replied == State.REPLIED else None,
                reply_id=str(9000 + i) if replied == State.REPLIED else None,
                reply_url=f"https://example.social/@band/{9000 + i}" if replied == State.REPLIED else None,
            )
            session.add(request)
            session.flush()
            session.add(
                Composition(
                    id=piece_id,
                    request_id=request.id,
                    parent_id=pieces[spec["parent"]].id if "parent" in spec else None,
                    genre=spec["genre"],
                    model_version=spec["model_version"],
                    seed=7000 + i,
                    temperature=spec.get("temperature", 1.0),
                    top_p=0.95,
                    seconds_requested=30.0,
                    duration=2.2,
                    events=40,
                    notes=8,
                    midi_path=store.write(piece_id, "mid", midi),
                    audio_path=store.write(piece_id, "mp3", audio),
                    audio_mime="audio/mpeg",
                    pianoroll_path=store.write(piece_id, "png", roll),
                    description=f"A short {spec['genre']} piece, calm and quiet.",
                    summary=spec.get("summary"),
                    asked_key=spec.get("key"),
                    asked_density=spec.get("density"),
                    key_followed=spec.get("key_followed"),
                    created_at=created,
                )
            )
            session.flush()
            request.composition_id = piece_id
        pieces.append(
            Piece(
                piece_id,
                spec["genre"],
                spec["model_version"],
                created,
                spec["visibility"],
                spec["text"],
                spec["acct"],
                7000 + i,
            )
        )
    engine.dispose()
    return pieces


def web_settings(url: str, media_dir: Path, **overrides: object):
    values = dict(
        database_url=url,
        media_dir=media_dir,
        bot_data_dir=media_dir.parent,
        archive_base_url="https://band.example",
        archive_admin_token=ADMIN_TOKEN,
    )
    return load_settings(env_file=None, require_platform=False, **(values | overrides))


def visible_everywhere(client, piece_id: str) -> dict[str, bool]:
    """Where the public can see the piece ``piece_id`` (an httpx client on the archive)."""
    return {
        "list": piece_id in client.get("/").text,
        "page": client.get(f"/pieces/{piece_id}").status_code == 200,
        "api list": piece_id in client.get("/api/v1/pieces").text,
        "api piece": client.get(f"/api/v1/pieces/{piece_id}").status_code == 200,
        "rss": piece_id in client.get("/feed.rss").text,
        "atom": piece_id in client.get("/feed.atom").text,
        "audio": client.get(f"/media/{piece_id}.mp3").status_code == 200,
        "midi": client.get(f"/media/{piece_id}.mid").status_code == 200,
    }


@contextmanager
def live_server(settings, catalog=genre_catalog, port: int | None = None) -> Iterator[str]:
    """The archive app under uvicorn on ``port`` (default: a free one), in a thread; yields its base URL."""
    app = create_app(settings, genre_catalog=catalog)
    port = port or free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the archive server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        app.state.site.sessions.kw["bind"].dispose()
