"""Shared links: HEAD answers wherever GET does, OpenGraph and player tags, oEmbed, the embeddable player, reuse terms.

A real archive (tests/web_helpers.py) under a real uvicorn server whose ARCHIVE_BASE_URL is
its own address, so every absolute URL in the tags is fetched for real; the embed is played
inside an iframe by Debian's headless Chromium where it is installed.
"""

from __future__ import annotations

import re
import struct
import threading
from functools import partial
from html.parser import HTMLParser
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from fastapi.routing import APIRoute
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.routing import Mount

from bot.local_mastodon import free_port
from tests.web_helpers import (
    GENRE_CARDS,
    HOSTILE_TEXT,
    PRIVATE_TEXT,
    default_pieces,
    fill_archive,
    live_server,
    web_settings,
)

CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("web-sharing")
    url = f"sqlite:///{workdir / 'bot.sqlite3'}"
    pieces = fill_archive(url, workdir / "media", default_pieces(), tmp_path_factory.getbasetemp() / "web-samples")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with live_server(web_settings(url, workdir / "media", archive_base_url=base), port=port) as served:
        assert served == base
        with httpx.Client(base_url=base, timeout=30) as client:
            yield base, client, pieces


class Head(HTMLParser):
    """The <meta> and <link> tags of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.meta: dict[str, str] = {}
        self.links: list[dict[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        if tag == "meta" and ("property" in values or "name" in values):
            self.meta[values.get("property") or values["name"]] = values.get("content", "")
        elif tag == "link":
            self.links.append(values)


def head_of(html: str) -> Head:
    parser = Head()
    parser.feed(html)
    return parser


def public_piece(pieces, genre: str = "folk", version: str = "v1"):
    return next(
        p
        for p in pieces
        if p.genre == genre and p.model_version == version and p.visibility == "public" and "number" in p.text
    )


def get_paths(app, piece_id: str) -> list[str]:
    """A real URL for every GET route of the app (path parameters filled with a real piece's)."""
    values = {"piece_id": piece_id, "genre": "folk", "kind": "rss", "name": "per-day"}
    paths = []

    def routes(container) -> list:  # FastAPI may keep an included router as one entry
        found = []
        for route in container.routes:
            inner = getattr(route, "original_router", None)
            found += routes(inner) if inner is not None else [route]
        return found

    for route in routes(app):
        if isinstance(route, Mount):
            paths.append(route.path + "/style.css")
        elif isinstance(route, APIRoute) and "GET" in route.methods:
            path = route.path
            if path == "/media/{name}":
                paths += [f"/media/{piece_id}.{ext}" for ext in ("mp3", "mid", "png")]
                continue
            if path == "/oembed":  # asks for a url: added with one by the caller
                continue
            if path == "/stats/{name}.svg":
                path = "/stats/per-day.svg"
            paths.append(re.sub(r"\{(\w+)\}", lambda m: values[m[1]], path))
        elif getattr(route, "methods", None) and "GET" in route.methods:  # openapi.json and the like
            paths.append(route.path)
    return paths


def test_head_answers_like_get_on_every_page_feed_and_media_file(archive):
    from fastapi import FastAPI

    from bot.web import create_app

    base, client, pieces = archive
    piece = public_piece(pieces)
    app: FastAPI = create_app(web_settings("sqlite://", Path("/nonexistent")), genre_catalog=list)
    paths = [*get_paths(app, piece.id), f"/oembed?url={quote(f'{base}/pieces/{piece.id}', safe='')}"]
    assert {"/", f"/pieces/{piece.id}", f"/media/{piece.id}.mp3", "/feed.rss", f"/pieces/{piece.id}/embed"} <= set(
        paths
    )
    for path in paths:
        got, head = client.get(path), client.head(path)
        assert got.status_code == 200, (path, got.status_code)
        assert head.status_code == 200, (path, head.status_code)
        assert head.content == b"", path
        for name in ("content-type", "content-length", "cache-control", "content-security-policy"):
            assert head.headers.get(name) == got.headers.get(name), (path, name)
    assert client.head("/pieces/no-such-piece").status_code == 404  # HEAD is not a blanket 200
    assert client.head("/media/no-such-piece.mp3").status_code == 404


def test_piece_page_has_opengraph_and_player_tags_that_resolve(archive):
    base, client, pieces = archive
    piece = public_piece(pieces)
    page = client.get(f"/pieces/{piece.id}")
    tags = head_of(page.text)
    og = tags.meta
    assert og["og:url"] == f"{base}/pieces/{piece.id}" and og["og:type"] == "music.song"
    assert og["og:title"].startswith("Folk, ") and str(piece.seed) in og["og:title"]
    assert og["og:description"] == "A short folk piece, calm and quiet."
    image = client.get(og["og:image"])
    assert image.status_code == 200 and image.headers["content-type"] == "image/png"
    width, height = struct.unpack(">II", image.content[16:24])  # the PNG's IHDR
    assert (width, height) == (int(og["og:image:width"]), int(og["og:image:height"]))
    audio = client.get(og["og:audio"])
    assert audio.status_code == 200 and audio.headers["content-type"] == og["og:audio:type"] == "audio/mpeg"
    assert og["twitter:card"] == "player" and og["twitter:player:stream"] == og["og:audio"]
    player = client.get(og["twitter:player"])
    assert player.status_code == 200 and "frame-ancestors *" in player.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]  # the page itself is not framed

    (discovery,) = [link for link in tags.links if link.get("type") == "application/json+oembed"]
    answer = client.get(discovery["href"]).json()
    assert answer["version"] == "1.0" and answer["type"] == "rich"
    assert answer["provider_url"] == base + "/" and answer["title"] == og["og:title"]
    iframe = re.fullmatch(r'<iframe src="([^"]+)" width="(\d+)" height="(\d+)"[^>]*></iframe>', answer["html"])
    assert iframe and iframe[1] == og["twitter:player"]
    assert (int(iframe[2]), int(iframe[3])) == (answer["width"], answer["height"])
    assert client.get(answer["thumbnail_url"]).content == image.content


def test_private_and_hostile_requests_never_reach_the_card(archive):
    _, client, pieces = archive
    for piece in pieces:
        if piece.visibility in ("public", "unlisted") and piece.text != HOSTILE_TEXT:
            continue
        page = client.get(f"/pieces/{piece.id}").text
        card = " ".join(head_of(page).meta.values())
        assert PRIVATE_TEXT not in card and "wilhelmina" not in card.lower()
        assert "<script>" not in card and "mallory" not in card
        assert client.get(f"/pieces/{piece.id}/embed").text.count("<script") == 0


def test_each_piece_page_says_under_what_terms_it_may_be_reused(archive):
    _, client, pieces = archive
    folk = GENRE_CARDS[0]["card"]
    current = client.get(f"/pieces/{public_piece(pieces).id}").text
    terms = current[current.index('id="reuse"') :]
    assert folk["license"] in terms and "attribution" in terms and "folk v1" in terms
    licenses = [link["href"] for link in head_of(current).links if link.get("rel") == "license"]
    assert licenses == ["https://www.gnu.org/licenses/gpl-3.0.html"]
    older = client.get(f"/pieces/{public_piece(pieces, 'folk', 'v2').id}").text  # no card for v2 in the catalogue
    terms = older[older.index('id="reuse"') :]
    assert "trained on" in terms and 'href="/genres"' in terms and "GPL" not in terms.split("</section>")[0]
    for piece in pieces:  # every piece page, private ones included, says it
        assert 'id="reuse"' in client.get(f"/pieces/{piece.id}").text


def test_reuse_terms_follow_the_licenses_named():
    from bot.web.sharing import ReuseTerms

    shipped = ReuseTerms(["CC BY-NC-SA 4.0", "GPL-3.0", "MIT"], "folk v4")
    assert shipped.non_commercial and shipped.share_alike
    assert "non-commercially" in shipped.summary() and "same terms" in shipped.summary()
    plain = ReuseTerms(["MIT"], "pop v3")
    assert not plain.non_commercial and not plain.share_alike and plain.summary().startswith("Reuse with attribution:")
    assert not ReuseTerms([], "pop v9").known


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    url=st.one_of(
        st.text(max_size=80),
        st.builds(lambda s: f"http://127.0.0.1:1/pieces/{s}", st.text(max_size=30)),
        st.sampled_from(["", "javascript:alert(1)", "https://band.example/pieces/x", "http://[::1", "//x/pieces/p"]),
    ),
    maxwidth=st.one_of(st.none(), st.integers(-5, 2000)),
    maxheight=st.one_of(st.none(), st.integers(-5, 2000)),
)
def test_oembed_answers_any_url_without_a_server_error_and_only_for_our_pieces(archive, url, maxwidth, maxheight):
    base, client, pieces = archive
    params = {"url": url} | ({"maxwidth": maxwidth} if maxwidth is not None else {})
    params |= {"maxheight": maxheight} if maxheight is not None else {}
    answer = client.get("/oembed", params=params)
    assert answer.status_code in (400, 404), (url, answer.status_code)
    assert "detail" in answer.json()
    real = client.get("/oembed", params=params | {"url": f"{base}/pieces/{public_piece(pieces).id}"})
    assert real.status_code == 200, real.text
    body = real.json()
    assert 0 < body["width"] <= (maxwidth if maxwidth and maxwidth > 0 else 480)
    assert 0 < body["height"] <= (maxheight if maxheight and maxheight > 0 else 350)


def test_oembed_refuses_other_formats_and_hidden_pieces(archive):
    base, client, pieces = archive
    piece = public_piece(pieces)
    assert client.get("/oembed", params={"url": f"{base}/pieces/{piece.id}", "format": "xml"}).status_code == 501
    unpublished = next(p for p in pieces if p.visibility == "direct")  # listed, private: still embeddable music
    assert client.get("/oembed", params={"url": f"{base}/pieces/{unpublished.id}"}).status_code == 200
    assert client.get("/oembed", params={"url": f"{base}/pieces/{piece.id}/embed"}).status_code == 404
    assert client.get("/oembed", params={"url": f"https://elsewhere.example/pieces/{piece.id}"}).status_code == 404
    assert client.get("/oembed").status_code == 400  # no url at all


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed")
def test_the_oembed_player_plays_inside_an_iframe_on_another_site(archive, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    from tests.test_web_browser import ARGS

    base, client, pieces = archive
    piece = public_piece(pieces)
    html = client.get("/oembed", params={"url": f"{base}/pieces/{piece.id}"}).json()["html"]
    (tmp_path / "blog.html").write_text(f"<!doctype html><html><body><h1>My blog</h1>{html}</body></html>")
    blog = ThreadingHTTPServer(("127.0.0.1", 0), partial(SimpleHTTPRequestHandler, directory=str(tmp_path)))
    threading.Thread(target=blog.serve_forever, daemon=True).start()
    # another origin ("localhost", another port) that embeds the player
    host = f"http://localhost:{blog.server_address[1]}/blog.html"
    with blog, sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 800, "height": 600})
            failures: list[str] = []
            page.on("response", lambda r: failures.append(r.url) if r.status >= 400 else None)
            page.goto(host)
            frame = page.frame_locator("iframe")
            frame.locator("img").wait_for()
            image = frame.locator("img").evaluate(
                "i => new Promise(done => i.complete ? done(i.naturalWidth) : i.onload = () => done(i.naturalWidth))"
            )
            assert image == 1280
            duration = frame.locator("audio").evaluate(
                """a => new Promise((done, fail) => {
                    if (a.readyState >= 1) return done(a.duration);
                    a.addEventListener('loadedmetadata', () => done(a.duration), {once: true});
                    a.addEventListener('error', () => fail('audio error'), {once: true});
                    a.load();
                })"""
            )
            assert 1.0 < duration < 10.0
            box = page.locator("iframe").bounding_box()
            assert box is not None and (round(box["width"]), round(box["height"])) == (480, 350)
            inner = frame.locator("body").evaluate("b => [b.scrollWidth, b.scrollHeight]")
            page.screenshot(path=str(tmp_path / "embed.png"))
            assert inner[0] <= 480, "the player is wider than its iframe"
            assert not failures, failures
            page.goto(f"{base}/pieces/{piece.id}")  # the page's own card tags, as a browser parses them
            pairs = "ms => Object.fromEntries(ms.map(m => [m.getAttribute('property'), m.content]))"
            tags = page.eval_on_selector_all("meta[property^='og:']", pairs)
            assert tags["og:image"] == f"{base}/media/{piece.id}.png"
        finally:
            browser.close()
            blog.shutdown()
