"""End to end: the bot answers mentions on a real mastodon_mock, then `bot web` serves what it filed."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import httpx
import pytest
from sqlalchemy import select

from bot.config import load_settings
from bot.db import Kind, MentionRequest, State, make_engine, session_factory
from bot.local_mastodon import free_port
from bot.migrate import upgrade
from bot.platforms.base import PermanentError, TransientError
from bot.platforms.mastodon import MastodonPlatform
from bot.worker import Worker
from composer.serving.local import LocalComposerClient
from tests.bot_helpers import make_models, mock_mastodon
from tests.web_helpers import ADMIN_TOKEN, live_server, visible_everywhere, web_settings

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def mock_worker(server, url: str, media_dir, models, sessions, **overrides) -> Worker:
    """A worker answering on ``server`` with 3-second pieces, filing into ``url`` and ``media_dir``."""
    settings = load_settings(
        mastodon_api_base_url=server.base_url,
        mastodon_access_token="band_token",
        database_url=url,
        media_dir=media_dir,
        archive_base_url="https://band.example",
        bot_default_seconds=3,
        bot_min_seconds=2,
        bot_max_seconds=4,
        **overrides,
    )
    platform = MastodonPlatform.from_settings(settings)
    platform.poll_interval = 0.05
    return Worker(settings, platform, LocalComposerClient(models_dir=models), sessions)


@pytest.fixture(scope="module")
def filed(tmp_path_factory):
    """Three mentions (public with hostile text, unlisted, direct) answered by the worker; yields env and job rows."""
    workdir = tmp_path_factory.mktemp("web-bot")
    models = make_models(workdir / "models", ("folk", "pop"))
    url = f"sqlite:///{workdir / 'bot.sqlite3'}"
    upgrade(url)
    sessions = session_factory(make_engine(url))
    with mock_mastodon(workdir / "mock") as server:
        texts = {
            "public": '@band folk <script>alert(1)</script> "onmouseover=alert(2) 3 seconds',
            "unlisted": "@band pop in B flat minor, busy, seed 4242, 3 seconds",
            "direct": "@band folk for my secret valentine, 3 seconds",
        }
        ids = {
            v: str(server.client(u).status_post(texts[v], visibility=v)["id"])
            for v, u in zip(texts, ("alice", "bob", "carol"))
        }
        report = mock_worker(server, url, workdir / "media", models, sessions).tick()
        assert report.replied == 3, report
    with sessions() as session:
        jobs = {j.visibility: j for j in session.scalars(select(MentionRequest))}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BOT_", "MASTODON_", "COMPOSER_", "ARCHIVE_"))}
    env |= dict(
        DATABASE_URL=url,
        MEDIA_DIR=str(workdir / "media"),
        BOT_DATA_DIR=str(workdir),
        COMPOSER_MODELS_DIR=str(models),
        ARCHIVE_BASE_URL="https://band.example",
        ARCHIVE_ADMIN_TOKEN=ADMIN_TOKEN,
    )
    yield env, jobs, texts, ids


@pytest.fixture(scope="module")
def web(filed):
    env = filed[0]
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "bot.cli", "web", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            httpx.get(f"{base}/api/v1/openapi.json", timeout=2)
            break
        except httpx.TransportError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(f"bot web did not start: {process.stderr.read().decode()[-2000:]}") from None
            time.sleep(0.2)
    with httpx.Client(base_url=base, timeout=30) as client:
        yield client
    process.terminate()
    process.wait(10)


def test_the_archive_shows_what_the_bot_filed(filed, web):
    _, jobs, _, _ = filed
    listing = web.get("/")
    assert listing.status_code == 200
    for job in jobs.values():
        assert f"/pieces/{job.composition_id}" in listing.text
    public = web.get(f"/pieces/{jobs['public'].composition_id}").text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in public and "<script>" not in public
    assert "&#34;onmouseover=alert(2)" in public and '"onmouseover' not in public
    assert jobs["public"].reply_url and jobs["public"].reply_url in public
    unlisted = web.get(f"/pieces/{jobs['unlisted'].composition_id}").text
    assert "@band pop in B flat minor, busy, seed 4242, 3 seconds" in unlisted and "<dd>4242</dd>" in unlisted
    assert '<code class="ask">@band busy pop in B♭ minor seed 4242, 3 seconds</code>' in unlisted
    assert "<dt>Key asked</dt><dd>B♭ minor (this model cannot follow a key yet)</dd>" in unlisted
    assert "<dt>Key heard</dt><dd>" in unlisted and "<dt>Density asked</dt><dd>12 notes a second (" in unlisted
    asked = web.get(f"/api/v1/pieces/{jobs['unlisted'].composition_id}").json()
    assert (asked["asked_key"], asked["asked_density"], asked["key_followed"]) == ("B♭ minor", 12.0, False)
    assert asked["key_heard"] and asked["key_heard"] in unlisted
    direct = web.get(f"/pieces/{jobs['direct'].composition_id}").text
    assert "valentine" not in direct and "carol" not in direct and "private mention" in direct
    api = web.get("/api/v1/pieces").json()
    assert len(api["items"]) == 3 and "valentine" not in str(api) and "carol" not in str(api)
    audio = web.get(api["items"][0]["audio_url"].replace("https://band.example", ""))
    assert (
        audio.status_code == 200
        and audio.headers["content-type"] == "audio/mpeg"
        and audio.content[:3]
        in (
            b"ID3",
            b"\xff\xfb",
            b"\xff\xf3",
        )
    )
    roll = web.get(f"/media/{jobs['direct'].composition_id}.png")
    assert roll.status_code == 200 and roll.content.startswith(b"\x89PNG")


def test_genres_come_from_the_composer_client(web):
    html = web.get("/genres").text
    assert "Folk" in html and "Pop" in html and "9.900 nats/event" in html
    names = [g["name"] for g in web.get("/api/v1/genres").json()]
    assert {"folk", "pop"} <= set(names)


def test_operator_hides_a_piece_through_the_command_line_server(filed, web):
    _, jobs, _, _ = filed
    piece_id = jobs["unlisted"].composition_id
    assert web.post(f"/api/v1/admin/pieces/{piece_id}/hide").status_code == 401
    hidden = web.post(f"/api/v1/admin/pieces/{piece_id}/hide", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert hidden.status_code == 200
    assert web.get(f"/pieces/{piece_id}").status_code == 404 and piece_id not in web.get("/feed.atom").text


def test_bot_web_refuses_an_unmigrated_database(tmp_path):
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "DATABASE_URL": f"sqlite:///{tmp_path / 'x.sqlite3'}"}
    done = subprocess.run(
        [sys.executable, "-m", "bot.cli", "web", "--port", "1"], env=env, capture_output=True, text=True
    )
    assert done.returncode == 2 and "bot db upgrade" in done.stderr


def test_a_piece_is_public_only_once_the_reply_carrying_it_is_posted(tmp_path, monkeypatch):
    """A job stopped after rendering, then after uploading: the piece and its files exist, yet nothing
    public shows them until the reply is out. A job that failed for good (the requester was told
    "sorry", without the piece) never shows its piece."""
    models = make_models(tmp_path / "models", ("folk",))
    url = f"sqlite:///{tmp_path / 'bot.sqlite3'}"
    upgrade(url)
    engine = make_engine(url)
    sessions = session_factory(engine)

    def job_of(acct: str) -> MentionRequest:
        with sessions() as session:
            return session.scalars(select(MentionRequest).where(MentionRequest.requester_acct == acct)).one()

    def public(piece_id: str) -> tuple[dict[str, bool], int]:
        """Where the piece shows, and how many pieces the stats count (a fresh server: nothing cached)."""
        with live_server(web_settings(url, tmp_path / "media")) as base, httpx.Client(base_url=base) as client:
            seen = visible_everywhere(client, piece_id)
            seen["genre filter"] = '<option value="folk"' in client.get("/").text
            counted = re.search(r"<dt>Pieces</dt><dd>(\d+)</dd>", client.get("/stats").text)
            return seen, int(counted.group(1))

    with mock_mastodon(tmp_path / "mock") as server:
        server.client("alice").status_post("@band folk, 3 seconds", visibility="public")
        worker = mock_worker(server, url, tmp_path / "media", models, sessions, bot_retry_base_seconds=0)
        platform = worker.platform

        def down(*args, **kwargs):
            raise TransientError("the server is down")

        monkeypatch.setattr(platform, "upload", down)  # stops the job after render
        worker.tick()
        job = job_of("alice")
        assert job.state == State.RENDERED and job.composition_id and job.reply_id is None
        piece_id = job.composition_id
        assert (tmp_path / "media" / piece_id[:2] / f"{piece_id}.mp3").is_file()
        seen, counted = public(piece_id)
        assert not any(seen.values()) and counted == 0, seen

        monkeypatch.undo()
        monkeypatch.setattr(platform, "reply", down)  # stops it after upload, before the reply
        worker.tick()
        assert job_of("alice").state == State.UPLOADED
        seen, counted = public(piece_id)
        assert not any(seen.values()) and counted == 0, seen

        monkeypatch.undo()
        worker.tick()
        assert job_of("alice").state == State.REPLIED
        seen, counted = public(piece_id)
        assert all(seen.values()) and counted == 1, seen

        server.client("bob").status_post("@band folk, 3 seconds", visibility="public")

        def refused(media):
            raise PermanentError("the server refuses this file")

        monkeypatch.setattr(platform, "upload", refused)
        worker.tick()
        failed = job_of("bob")
        assert failed.state == State.FAILED and failed.kind == Kind.SORRY and failed.reply_id  # told, without the piece
        assert failed.composition_id and failed.composition_id != piece_id
        seen, counted = public(failed.composition_id)
        assert not any(v for where, v in seen.items() if where != "genre filter") and counted == 1, seen
    engine.dispose()
