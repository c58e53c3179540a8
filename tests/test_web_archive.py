"""The archive web over real HTTP on SQLite and PostgreSQL: pages, paging, filters, privacy, escaping, media, feeds."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from tests.bot_helpers import postgres_schema
from tests.web_helpers import (
    HOSTILE_NAME,
    HOSTILE_TEXT,
    PRIVATE_TEXT,
    default_pieces,
    fill_archive,
    live_server,
    web_settings,
)

ATOM = "{http://www.w3.org/2005/Atom}"
WARNING = "flashing lights & loud bits"
PRIVATE_WARNING = "a surprise for Wilhelmina"


def archive_specs() -> list[dict]:
    """The default 30 pieces, a few with a content warning or a mood other than the default."""
    specs = default_pieces()
    specs[4] |= dict(spoiler=WARNING, temperature=0.85)  # public; "calm" asks for 0.85
    specs[5] |= dict(temperature=0.777)  # unlisted; no mix of mood words gives 0.777
    specs[6] |= dict(spoiler=PRIVATE_WARNING, temperature=1.15)  # private: its warning stays private too
    heard = {"notes": 80, "notes_per_second": 3.25, "key": "G major", "key_clarity": 0.82}
    specs[8] |= dict(key="E♭ minor", density=12.0, key_followed=False, summary=heard)  # public, pop
    specs[12] |= dict(summary={"notes": 8, "notes_per_second": 1.0, "key": "<b>B minor</b>", "key_clarity": 0.3})
    return specs


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def archive(request, tmp_path_factory):
    """A live server over 30 pieces; yields (client, pieces)."""
    workdir = tmp_path_factory.mktemp(f"web-{request.param}")
    samples = tmp_path_factory.getbasetemp() / "web-samples"
    if request.param == "sqlite":
        url = f"sqlite:///{workdir / 'bot.sqlite3'}"
        yield from _serve(url, workdir, samples)
    else:
        with postgres_schema() as url:
            yield from _serve(url, workdir, samples)


def _serve(url: str, workdir: Path, samples: Path):
    pieces = fill_archive(url, workdir / "media", archive_specs(), samples)
    with live_server(web_settings(url, workdir / "media")) as base, httpx.Client(base_url=base, timeout=30) as client:
        yield client, pieces


def ids_on(html: str) -> list[str]:
    return re.findall(r'<h2><a href="/pieces/([\w-]+)">', html)


def walk(client: httpx.Client, query: str = "") -> list[str]:
    """Every piece id over all list pages, following the 'Older pieces' links."""
    seen, link = [], f"/?{query}"
    for _ in range(50):
        html = client.get(link).text
        seen += ids_on(html)
        found = re.search(r'<a rel="next" href="([^"]+)"', html)
        if not found:
            return seen
        link = found.group(1).replace("&amp;", "&")
    raise AssertionError("paging did not end")


def newest_first(pieces, keep=lambda p: True) -> list[str]:
    return [p.id for p in sorted(pieces, key=lambda p: p.created_at, reverse=True) if keep(p)]


def test_list_page_is_newest_first_and_keyset_paging_visits_each_piece_once(archive):
    client, pieces = archive
    first = client.get("/")
    assert first.status_code == 200 and first.headers["content-type"].startswith("text/html")
    assert ids_on(first.text) == newest_first(pieces)[:20]
    assert walk(client) == newest_first(pieces)
    assert "offset" not in first.text.lower()
    shown = next(p for p in sorted(pieces, key=lambda p: p.created_at)[::-1] if p.visibility == "unlisted")
    row = next(r for r in first.text.split('<article class="piece-row">') if f"/pieces/{shown.id}" in r)
    assert '<audio controls preload="none"><source src="/media/' in row and 'type="audio/mpeg"' in row
    assert '<img src="/media/' in row and "<time datetime=" in row and "original post" in row


def test_filters_by_genre_version_date_and_requester(archive):
    client, pieces = archive
    assert walk(client, "genre=folk") == newest_first(pieces, lambda p: p.genre == "folk")
    assert walk(client, "model_version=v2") == newest_first(pieces, lambda p: p.model_version == "v2")
    day = pieces[10].created_at.date()
    on_day = newest_first(pieces, lambda p: p.created_at.date() == day)
    assert on_day and walk(client, f"since={day}&until={day}") == on_day
    assert walk(client, "genre=pop&model_version=v1&since=&until=&requester=") == newest_first(
        pieces, lambda p: p.genre == "pop" and p.model_version == "v1"
    )
    public_user1 = newest_first(
        pieces, lambda p: p.acct.startswith("user1@") and p.visibility in ("public", "unlisted")
    )
    assert public_user1 and walk(client, "requester=%40USER1") == public_user1
    assert walk(client, "requester=wilhelmina") == []  # asked in a direct mention: not findable by name
    assert walk(client, "requester=%25") == []  # LIKE wildcards are literal
    assert client.get("/?since=yesterday").status_code == 400
    assert client.get("/?cursor=not-a-cursor").status_code == 400


def test_piece_page_shows_parameters_downloads_and_how_to_ask_again(archive):
    client, pieces = archive
    piece = next(p for p in pieces if p.visibility == "public" and "number" in p.text)
    html = client.get(f"/pieces/{piece.id}").text
    for expected in (
        f"<dd>{piece.model_version}</dd>",
        f"<dd>{piece.seed}</dd>",
        "<dt>Temperature</dt><dd>1.00</dd>",
        f'href="/media/{piece.id}.mid" download>MIDI',
        f'href="/media/{piece.id}.mp3" download>MP3',
        f"@band {piece.genre} seed {piece.seed}, 30 seconds",
        piece.text,
        'href="https://example.social/@band/',
        "the bot's reply",
    ):
        assert expected in html, expected
    missing = client.get("/pieces/nope0000")
    assert missing.status_code == 404 and "<h1>Not found</h1>" in missing.text
    assert client.get("/pieces/..%2F..%2Fetc%2Fpasswd").status_code == 404
    assert client.get("/no/such/page").status_code == 404


def test_private_requests_stay_out_of_pages_feeds_and_api(archive):
    client, pieces = archive
    private = [p for p in pieces if p.visibility in ("private", "direct")]
    secret = next(p for p in private if p.text == PRIVATE_TEXT)
    page = client.get(f"/pieces/{secret.id}")
    assert page.status_code == 200 and "private mention" in page.text
    api = client.get(f"/api/v1/pieces/{secret.id}").json()
    assert api["request"] is None and api["reply_url"] is None
    everything = [page.text, client.get(f"/api/v1/pieces/{secret.id}").text]
    for link in ("/", "/?cursor=", "/feed.rss", "/feed.atom", "/genres/folk/feed.atom", "/genres/pop/feed.rss"):
        everything.append(client.get(link).text)
    cursor = None
    while True:
        body = client.get("/api/v1/pieces", params={"limit": 7} | ({"cursor": cursor} if cursor else {})).json()
        everything.append(str(body))
        if not (cursor := body["next_cursor"]):
            break
    for piece in private:
        page = client.get(f"/pieces/{piece.id}").text
        assert piece.acct not in page and piece.text not in page
        everything.append(page)
    text = "\n".join(everything)
    assert "Wilhelmina" not in text and "wilhelmina" not in text
    for piece in private:
        assert piece.text not in text and f"/{1000 + pieces.index(piece)}" not in text
    shown = next(p for p in pieces if p.visibility == "unlisted")
    assert shown.text in client.get(f"/pieces/{shown.id}").text


def test_user_text_is_escaped_and_javascript_links_never_become_hrefs(archive):
    client, pieces = archive
    hostile = next(p for p in pieces if p.text == HOSTILE_TEXT)
    bodies = [client.get(f"/pieces/{hostile.id}").text, client.get("/").text, client.get("/?requester=mallory").text]
    for html in bodies:
        assert "<script>" not in html and "<img src=x" not in html
        assert '"onmouseover=' not in html
        assert "javascript:" not in html.lower()
    page = bodies[0]
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in page
    assert "&#34;onmouseover=alert(1) x=&#34;" in page
    assert "&#34;&gt;&lt;img src=x onerror=alert(2)&gt;" in page  # the display name, escaped
    assert HOSTILE_NAME not in page
    assert f'href="/?genre={hostile.genre}"' in page  # ordinary links survive
    api = client.get(f"/api/v1/pieces/{hostile.id}").json()
    assert api["request"]["text"] == HOSTILE_TEXT  # JSON carries the text as data
    assert api["request"]["requester_url"] is None and api["request"]["mention_url"] is None
    for feed in ("/feed.rss", "/feed.atom"):
        body = client.get(feed).text
        ET.fromstring(body)  # still well-formed XML
        assert "<script>" not in body and "javascript:" not in body.lower()
    headers = client.get("/").headers
    assert (
        "script-src" not in headers["content-security-policy"]
        and "default-src 'none'" in headers["content-security-policy"]
    )


def test_media_is_served_by_id_from_media_dir_only(archive):
    client, pieces = archive
    piece = pieces[0]
    audio = client.get(f"/media/{piece.id}.mp3")
    assert audio.status_code == 200 and audio.headers["content-type"] == "audio/mpeg" and len(audio.content) > 1000
    ranged = client.get(f"/media/{piece.id}.mp3", headers={"Range": "bytes=0-99"})
    assert ranged.status_code == 206 and len(ranged.content) == 100
    midi = client.get(f"/media/{piece.id}.mid")
    assert (
        midi.status_code == 200
        and midi.content.startswith(b"MThd")
        and "attachment" in midi.headers.get("content-disposition", "")
    )
    assert client.get(f"/media/{piece.id}.png").headers["content-type"] == "image/png"
    for attempt in (
        f"/media/{piece.id}.ogg",  # a format this piece does not have
        "/media/nope0000.mp3",
        "/media/..%2F..%2F..%2Fetc%2Fpasswd",
        "/media/%2E%2E%2Fbot.sqlite3",
        "/media/..%252Fbot.sqlite3",
        "/media/....//....//etc/passwd",
        f"/media/{piece.id[:2]}%2F{piece.id}.mp3",
        "/media/bot.sqlite3",
        "/static/..%2F..%2Fconfig.py",
        "/static/../../config.py",
    ):
        response = client.get(attempt)
        assert response.status_code == 404, attempt
        assert b"SQLite" not in response.content and b"root:" not in response.content


def test_feeds_have_audio_enclosures_all_and_per_genre(archive):
    client, pieces = archive
    rss = ET.fromstring(client.get("/feed.rss").content)
    items = rss.findall("./channel/item")
    assert len(items) == len(pieces)
    enclosure = items[0].find("enclosure")
    assert enclosure.get("type") == "audio/mpeg" and int(enclosure.get("length")) > 1000
    assert enclosure.get("url") == f"https://band.example/media/{newest_first(pieces)[0]}.mp3"
    atom = ET.fromstring(client.get("/genres/folk/feed.atom").content)
    entries = atom.findall(f"{ATOM}entry")
    assert len(entries) == sum(p.genre == "folk" for p in pieces)
    assert all(e.find(f"{ATOM}category").get("term") == "folk" for e in entries)
    links = [link for e in entries for link in e.findall(f"{ATOM}link") if link.get("rel") == "enclosure"]
    assert len(links) == len(entries) and links[0].get("type") == "audio/mpeg"
    assert client.get("/feed.rss").headers["content-type"].startswith("application/rss+xml")
    assert client.get("/genres/nosuch/feed.rss").status_code == 404
    assert client.get("/feed.json").status_code == 404


def test_api_lists_with_filters_and_cursor_and_documents_itself(archive):
    client, pieces = archive
    ids, cursor = [], None
    while True:
        params = {"genre": "classical", "limit": 3} | ({"cursor": cursor} if cursor else {})
        body = client.get("/api/v1/pieces", params=params).json()
        ids += [item["id"] for item in body["items"]]
        if not (cursor := body["next_cursor"]):
            break
    assert ids == newest_first(pieces, lambda p: p.genre == "classical")
    one = client.get(f"/api/v1/pieces/{ids[0]}").json()
    assert one["audio_url"].endswith(f"/media/{ids[0]}.mp3") and one["audio_type"] == "audio/mpeg"
    assert one["midi_url"].endswith(".mid") and one["ask_again"].startswith("@band classical seed ")
    assert client.get("/api/v1/pieces/nope0000").status_code == 404
    assert client.get("/api/v1/pieces", params={"cursor": "garbage"}).status_code == 400
    assert client.get("/api/v1/pieces", params={"limit": 1000}).status_code == 422
    assert client.get("/api/v1/pieces", params={"since": "2026-11-19", "until": "2026-11-19"}).status_code == 200
    schema = client.get("/api/v1/openapi.json").json()
    assert {"/api/v1/pieces", "/api/v1/pieces/{piece_id}", "/api/v1/genres"} <= set(schema["paths"])
    docs = client.get("/api/v1/docs").text
    assert "GET /api/v1/pieces" in docs and "cdn" not in docs.lower()
    genres = client.get("/api/v1/genres").json()
    assert genres[0]["name"] == "folk" and genres[0]["card"]["validation_nll"] == 1.234


def test_genres_and_stats_pages(archive):
    client, pieces = archive
    html = client.get("/genres").text
    assert "1.234 nats/event" in html and "GPL-3.0" in html and "nottingham" in html and "no model yet" in html
    assert "&lt;b&gt;not yet&lt;/b&gt;" in html
    stats = client.get("/stats").text
    assert f"<dd>{len(pieces)}</dd>" in stats
    assert "Median mention to reply</dt><dd>1:00</dd>" in stats  # waits of 45..74 s
    for plot in ("/stats/per-day.svg", "/stats/per-genre.svg"):
        response = client.get(plot)
        assert response.status_code == 200 and response.headers["content-type"] == "image/svg+xml"
        assert response.content.lstrip().startswith(b"<?xml") and b"<svg" in response.content
    assert client.get("/stats/nope.svg").status_code == 404
    for page in ("/", "/genres", "/stats", f"/pieces/{pieces[0].id}"):
        head = client.get(page).text.split("<main>")[0]  # nothing loaded from a CDN (links to pages may be absolute)
        assert not re.search(r'src="(https?:)?//', head)
        for link in re.findall(r"<link [^>]*>", head):
            if re.search(r'rel="(stylesheet|icon|preload|modulepreload)"', link):
                assert not re.search(r'href="(https?:)?//', link), link


def test_extreme_dates_forged_cursors_and_nul_bytes_are_never_a_server_error(archive):
    import base64

    client, _ = archive
    forged = base64.urlsafe_b64encode(b"0001-01-01T00:00:00+01:00|abc").decode().rstrip("=")
    for path in ("/", "/api/v1/pieces"):
        for params in (
            {"until": "9999-12-31"},
            {"since": "0001-01-01"},
            {"cursor": forged},
            {"genre": "\x00"},
            {"requester": "a\x00b"},
            {"model_version": "\x00v1"},
        ):
            answer = client.get(path, params=params)
            assert answer.status_code < 500, (path, params, answer.status_code)
    assert client.get("/", params={"until": "9999-12-31"}).status_code == 200
    assert client.get("/api/v1/pieces", params={"cursor": forged}).status_code in (400, 422)
    assert client.get("/genres/%00/feed.rss").status_code < 500


def test_piece_page_shows_the_content_warning_around_the_request_and_the_mood_to_ask_again(archive):
    from bot.request_text import parse_request

    client, pieces = archive
    warned, odd, private, plain = pieces[4], pieces[5], pieces[6], pieces[0]
    html = client.get(f"/pieces/{warned.id}").text
    details = html.split('<details class="content-warning">', 1)[1].split("</details>", 1)[0]
    assert "<summary>Content warning: flashing lights &amp; loud bits</summary>" in details
    assert warned.text in details  # the request text is behind the warning, not beside it
    assert html.count(warned.text) == 1
    ask = f"@band gentle {warned.genre} seed {warned.seed}, 30 seconds"  # "calm" would also ask for a pace
    assert f'<code class="ask">{ask}</code>' in html
    again = parse_request(ask, [warned.genre])  # the parser reads the mention back to the same piece
    assert (again.genre, again.seed, again.seconds, again.temperature) == (warned.genre, warned.seed, 30.0, 0.85)
    assert (again.key, again.density) == (None, None)
    api = client.get(f"/api/v1/pieces/{warned.id}").json()
    assert api["request"]["content_warning"] == WARNING and api["ask_again"] == ask
    assert api["temperature"] == 0.85
    rss = client.get("/feed.rss").text
    assert f"(content warning: {WARNING})".replace("&", "&amp;") in rss and warned.text not in rss

    odd_html = client.get(f"/pieces/{odd.id}").text
    assert f'<code class="ask">@band {odd.genre} seed {odd.seed}, 30 seconds</code>' in odd_html
    assert "temperature 0.777, which no mix of mood words gives exactly" in odd_html

    plain_html = client.get(f"/pieces/{plain.id}").text
    assert "<details" not in plain_html and "temperature 1" not in plain_html
    everything = client.get(f"/pieces/{private.id}").text + client.get(f"/api/v1/pieces/{private.id}").text
    everything += client.get("/feed.atom").text + client.get("/api/v1/pieces?limit=100").text
    assert "Wilhelmina" not in everything and "<details" not in everything
    assert client.get(f"/api/v1/pieces/{private.id}").json()["ask_again"].startswith("@band wild ")


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def tied(request, tmp_path_factory):
    """45 pieces filed in the same instant (a burst the clock did not tell apart) between 5 others."""
    workdir = tmp_path_factory.mktemp(f"tied-{request.param}")
    samples = tmp_path_factory.getbasetemp() / "web-samples"
    specs = default_pieces()[:25] + default_pieces()[:25]
    instant = specs[10]["created_at"]
    for i, spec in enumerate(specs):
        spec["created_at"] = instant + timedelta(hours=i - 2) if i < 2 or i >= 47 else instant
        spec["visibility"] = "public"
    if request.param == "sqlite":
        yield from _serve_specs(f"sqlite:///{workdir / 'bot.sqlite3'}", workdir, samples, specs)
    else:
        with postgres_schema() as url:
            yield from _serve_specs(url, workdir, samples, specs)


def _serve_specs(url: str, workdir: Path, samples: Path, specs: list[dict]):
    pieces = fill_archive(url, workdir / "media", specs, samples)
    with live_server(web_settings(url, workdir / "media")) as base, httpx.Client(base_url=base, timeout=30) as client:
        yield client, pieces


def api_walk(client: httpx.Client, limit: int, **filters: str) -> list[str]:
    ids, cursor = [], None
    for _ in range(100):
        params = filters | {"limit": limit} | ({"cursor": cursor} if cursor else {})
        body = client.get("/api/v1/pieces", params=params).json()
        ids += [item["id"] for item in body["items"]]
        if not (cursor := body["next_cursor"]):
            return ids
    raise AssertionError("paging did not end")


def test_keyset_paging_visits_pieces_with_equal_timestamps_exactly_once(tied):
    client, pieces = tied
    assert sum(p.created_at == pieces[10].created_at for p in pieces) == 45
    expected = [p.id for p in sorted(pieces, key=lambda p: (p.created_at, p.id), reverse=True)]
    pages = walk(client)  # 20 a page: both page breaks fall inside the tie
    assert pages == expected and len(set(pages)) == len(pieces) == 50
    for limit in (1, 7, 20, 45, 100):
        assert api_walk(client, limit) == expected, limit
    folk = [i for i in expected if next(p for p in pieces if p.id == i).genre == "folk"]
    assert walk(client, "genre=folk") == folk and api_walk(client, 4, genre="folk") == folk


def test_health_and_readiness(tmp_path):
    from fastapi.testclient import TestClient

    from bot.config import load_settings
    from bot.migrate import upgrade
    from bot.web import create_app

    db = tmp_path / "bot.sqlite3"
    settings = load_settings(require_platform=False, database_url=f"sqlite:///{db}", media_dir=tmp_path / "media")
    upgrade(settings.resolved_database_url, "head")
    with TestClient(create_app(settings, genre_catalog=list)) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        assert client.get("/readyz").status_code == 200
    # A database server that does not answer (nothing listens on port 1): not ready, but alive.
    gone = load_settings(
        require_platform=False, database_url="postgresql+psycopg://postgres@127.0.0.1:1/test", media_dir=tmp_path
    )
    with TestClient(create_app(gone, genre_catalog=list)) as client:
        assert client.get("/healthz").status_code == 200
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["status"] == "database unavailable"


def test_piece_page_and_api_show_the_key_and_pace_asked_and_the_key_heard(archive):
    from bot.request_text import parse_request

    client, pieces = archive
    asked, faint, plain = pieces[8], pieces[12], pieces[0]
    html = client.get(f"/pieces/{asked.id}").text
    for expected in (
        "<dt>Key asked</dt><dd>E♭ minor (this model cannot follow a key yet)</dd>",
        "<dt>Key heard</dt><dd>G major</dd>",
        "<dt>Density asked</dt><dd>12 notes a second (3.2 played)</dd>",
        "The same genre, seed, length, mood, key and pace give the same piece",
    ):
        assert expected in html, expected
    ask = f"@band busy {asked.genre} in E♭ minor seed {asked.seed}, 30 seconds"
    assert f'<code class="ask">{ask}</code>' in html
    again = parse_request(ask, [asked.genre])
    assert (again.genre, again.seed, again.seconds, again.temperature) == (asked.genre, asked.seed, 30.0, 1.0)
    assert (again.key, again.density) == ("E♭ minor", 12.0)
    api = client.get(f"/api/v1/pieces/{asked.id}").json()
    assert (api["asked_key"], api["asked_density"], api["key_followed"], api["key_heard"]) == (
        "E♭ minor",
        12.0,
        False,
        "G major",
    )
    assert api["ask_again"] == ask
    faint_html = client.get(f"/pieces/{faint.id}").text  # a summary's key is escaped like any text
    assert "<dt>Key heard</dt><dd>&lt;b&gt;B minor&lt;/b&gt; (faintly)</dd>" in faint_html
    assert "<b>B minor" not in faint_html and "Key asked" not in faint_html
    plain_html = client.get(f"/pieces/{plain.id}").text  # an older piece: nothing asked, no summary
    assert "Key asked" not in plain_html and "Key heard" not in plain_html and "Density asked" not in plain_html
    assert "The same genre, seed, length and mood give the same piece" in plain_html
    plain_api = client.get(f"/api/v1/pieces/{plain.id}").json()
    assert plain_api["asked_key"] is None and plain_api["key_followed"] is None and plain_api["key_heard"] is None
