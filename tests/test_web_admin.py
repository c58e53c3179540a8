"""Operators' takedown over HTTP on SQLite and PostgreSQL: the token is required, hidden pieces vanish everywhere."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import select

from bot.db import Composition, MentionRequest, make_engine, session_factory
from bot.web.admin import GuessThrottle
from tests.web_helpers import (
    ADMIN_TOKEN,
    default_pieces,
    fill_archive,
    live_server,
    visible_everywhere,
    web_settings,
)

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture
def archive(database_url, tmp_path, tmp_path_factory):
    pieces = fill_archive(database_url, tmp_path / "media", default_pieces()[:4], tmp_path_factory.getbasetemp() / "s")
    with live_server(web_settings(database_url, tmp_path / "media")) as base, httpx.Client(base_url=base) as client:
        yield client, pieces, database_url, tmp_path / "media"


def test_actions_refuse_a_missing_or_wrong_token_and_throttle_the_guesses(archive):
    client, pieces, _, _ = archive
    piece_id = pieces[0].id
    wrong = [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": ADMIN_TOKEN},
        {"Authorization": "Basic x"},
        {"Authorization": f"Bearer {ADMIN_TOKEN.upper()}"},
    ]
    assert client.get(f"/api/v1/admin/pieces/{piece_id}/hide", headers=AUTH).status_code == 405
    for headers in wrong:  # five wrong tokens are heard, and refused
        assert client.post(f"/api/v1/admin/pieces/{piece_id}/hide", headers=headers).status_code == 401
    for attempt in (*wrong, AUTH):  # then none is even checked, the right one included
        answer = client.delete(f"/api/v1/admin/pieces/{piece_id}", headers=attempt)
        assert answer.status_code == 429 and 0 < int(answer.headers["retry-after"]) <= 600
    assert all(visible_everywhere(client, piece_id).values())


def test_the_throttle_counts_per_client_and_overall_and_forgets_after_its_window():
    now = [0.0]
    throttle = GuessThrottle(per_client=3, overall=5, window=60, clock=lambda: now[0])
    for _ in range(3):
        assert throttle.wait("a") == 0
        throttle.failed("a")
    assert throttle.wait("a") == 60 and throttle.wait("b") == 0  # one client's guesses hold back that client
    now[0] = 30
    throttle.failed("b")
    throttle.failed("c")  # five in all: everyone waits until the oldest leaves the window
    assert throttle.wait("d") == 30 and throttle.wait("a") == 30
    now[0] = 60
    assert throttle.wait("a") == 0 and throttle.wait("d") == 0


def test_no_configured_token_means_no_actions(database_url, tmp_path, tmp_path_factory):
    pieces = fill_archive(database_url, tmp_path / "media", default_pieces()[:1], tmp_path_factory.getbasetemp() / "s")
    settings = web_settings(database_url, tmp_path / "media", archive_admin_token=None)
    with live_server(settings) as base:
        for token in ("x", "None", ADMIN_TOKEN):
            answer = httpx.post(
                f"{base}/api/v1/admin/pieces/{pieces[0].id}/hide", headers={"Authorization": f"Bearer {token}"}
            )
            assert answer.status_code == 401


def test_hide_makes_a_piece_vanish_and_unhide_brings_it_back(archive):
    client, pieces, _, _ = archive
    piece_id = pieces[1].id
    assert all(visible_everywhere(client, piece_id).values())
    answer = client.post(f"/api/v1/admin/pieces/{piece_id}/hide", headers=AUTH)
    assert answer.status_code == 200 and answer.json() == {"id": piece_id, "hidden": True}
    assert not any(visible_everywhere(client, piece_id).values())
    assert client.get(f"/pieces/{piece_id}").status_code == 404
    assert all(visible_everywhere(client, pieces[0].id).values())  # the others stay
    assert client.post(f"/api/v1/admin/pieces/{piece_id}/unhide", headers=AUTH).status_code == 200
    assert all(visible_everywhere(client, piece_id).values())
    assert client.post("/api/v1/admin/pieces/nope0000/hide", headers=AUTH).status_code == 404
    assert client.post("/api/v1/admin/pieces/..%2F..%2Fx/hide", headers=AUTH).status_code == 404


def test_delete_removes_the_row_and_its_files_and_keeps_the_request(archive):
    client, pieces, url, media = archive
    piece_id = pieces[2].id
    files = sorted(p.name for p in media.rglob(f"{piece_id}.*"))
    assert files == [f"{piece_id}.mid", f"{piece_id}.mp3", f"{piece_id}.png"]
    answer = client.delete(f"/api/v1/admin/pieces/{piece_id}", headers=AUTH)
    assert answer.status_code == 200 and answer.json()["files_removed"] == 3
    assert not list(media.rglob(f"{piece_id}.*"))
    assert not any(visible_everywhere(client, piece_id).values())
    assert client.delete(f"/api/v1/admin/pieces/{piece_id}", headers=AUTH).status_code == 404
    engine = make_engine(url)
    with session_factory(engine)() as session:
        assert session.get(Composition, piece_id) is None
        request = session.scalars(select(MentionRequest).where(MentionRequest.mention_id == "1002")).one()
        assert request.composition_id is None and request.reply_id == "9002"  # the bot never answers it again
    engine.dispose()


def test_a_continuation_never_names_a_hidden_source(database_url, tmp_path, tmp_path_factory):
    specs = default_pieces()[:2]
    specs[1] |= dict(parent=0, visibility="public", text="@band more please")  # a "more" of piece 0
    source, more = fill_archive(database_url, tmp_path / "media", specs, tmp_path_factory.getbasetemp() / "s")
    with live_server(web_settings(database_url, tmp_path / "media")) as base, httpx.Client(base_url=base) as client:

        def public_bodies() -> dict[str, str]:
            return {
                "page": client.get(f"/pieces/{more.id}").text,
                "api piece": client.get(f"/api/v1/pieces/{more.id}").text,
                "api list": client.get("/api/v1/pieces").text,
                "list": client.get("/").text,
                "rss": client.get("/feed.rss").text,
                "atom": client.get("/feed.atom").text,
                "genre feed": client.get(f"/genres/{more.genre}/feed.atom").text,
            }

        page = client.get(f"/pieces/{more.id}").text
        assert f'<dt>Continues</dt><dd><a href="/pieces/{source.id}">' in page
        assert client.get(f"/api/v1/pieces/{more.id}").json()["continues"] == source.id
        assert client.post(f"/api/v1/admin/pieces/{source.id}/hide", headers=AUTH).status_code == 200
        bodies = public_bodies()
        assert [where for where, body in bodies.items() if source.id in body] == []
        assert "<dt>Continues</dt>" not in bodies["page"]
        assert client.get(f"/api/v1/pieces/{more.id}").json()["continues"] is None
        assert client.post(f"/api/v1/admin/pieces/{source.id}/unhide", headers=AUTH).status_code == 200
        assert client.get(f"/api/v1/pieces/{more.id}").json()["continues"] == source.id
