"""The archive in headless Chromium (Debian's, driven by Playwright): pages load, audio plays, filters and paging work.

Screenshots at desktop and phone width go to WEB_SCREENSHOTS_DIR when set (else the test's
temporary folder), to be looked at. Skipped only when /usr/bin/chromium is missing.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.web_helpers import default_pieces, fill_archive, live_server, web_settings

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed")


@pytest.fixture(scope="module")
def base_url(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("web-browser")
    url = f"sqlite:///{workdir / 'bot.sqlite3'}"
    pieces = fill_archive(url, workdir / "media", default_pieces(), tmp_path_factory.getbasetemp() / "web-samples")
    with live_server(web_settings(url, workdir / "media")) as base:
        yield base, pieces


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    folder = Path(os.environ.get("WEB_SCREENSHOTS_DIR") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_list_page_plays_audio_filters_and_pages(base_url, browser, shots):
    base, pieces = base_url
    context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    errors: list[str] = []
    page.on("response", lambda response: errors.append(response.url) if response.status >= 400 else None)
    page.goto(base + "/")
    assert page.title() == "band archive"
    assert page.locator("ol.pieces > li").count() == 20
    audio = page.locator("audio").first
    assert audio.evaluate("a => a.canPlayType('audio/mpeg')") in ("probably", "maybe")
    source = audio.locator("source").get_attribute("src")
    fetched = context.request.get(base + source)
    assert fetched.status == 200 and fetched.headers["content-type"].startswith("audio/")
    duration = audio.evaluate(
        """a => new Promise((done, fail) => {
            a.addEventListener('loadedmetadata', () => done(a.duration), {once: true});
            a.addEventListener('error', () => fail('audio error ' + (a.error && a.error.code)), {once: true});
            a.preload = 'metadata'; a.load();
        })"""
    )
    assert 1.0 < duration < 10.0  # the real MP3 decoded by the browser
    page.wait_for_function(
        "() => { const i = document.querySelector('ol.pieces img'); return i.complete && i.naturalWidth > 0; }"
    )
    page.screenshot(path=str(shots / "list-desktop.png"), full_page=False)

    page.select_option("select[name=genre]", "folk")
    page.fill("input[name=model_version]", "v1")
    page.click("button[type=submit]")
    assert "genre=folk" in page.url and "model_version=v1" in page.url
    titles = page.locator("ol.pieces h2").all_inner_texts()
    expected = [p for p in pieces if p.genre == "folk" and p.model_version == "v1"]
    assert len(titles) == len(expected) and all(t.startswith("Folk") for t in titles)

    page.goto(base + "/")
    first_page = page.locator("ol.pieces h2 a").evaluate_all("links => links.map(a => a.getAttribute('href'))")
    page.click("a[rel=next]")
    second_page = page.locator("ol.pieces h2 a").evaluate_all("links => links.map(a => a.getAttribute('href'))")
    assert len(second_page) == len(pieces) - 20 and not set(first_page) & set(second_page)
    assert page.locator("a[rel=next]").count() == 0 and page.locator("text=← Newest").count() == 1
    assert not errors, errors
    context.close()


def test_piece_page_at_desktop_and_phone_width(base_url, browser, shots):
    base, pieces = base_url
    piece = next(p for p in pieces if p.visibility == "public" and "number" in p.text)
    for name, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
        context = browser.new_context(viewport=viewport, device_scale_factor=1, is_mobile=name == "phone")
        page = context.new_page()
        page.goto(f"{base}/pieces/{piece.id}")
        assert page.locator("h1").inner_text().startswith(piece.genre.capitalize())
        assert page.locator("figure.roll img").evaluate("i => i.naturalWidth") > 0
        assert page.locator("audio source").get_attribute("type") == "audio/mpeg"
        assert page.locator("code.ask").inner_text() == f"@band {piece.genre} seed {piece.seed}, 30 seconds"
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= viewport["width"], f"horizontal scrolling at {name} width"
        page.screenshot(path=str(shots / f"piece-{name}.png"), full_page=True)
        page.goto(base + "/")
        assert page.evaluate("document.documentElement.scrollWidth") <= viewport["width"]
        page.screenshot(path=str(shots / f"list-{name}-full.png"), full_page=name == "phone")
        for extra in ("genres", "stats"):
            page.goto(f"{base}/{extra}")
            page.screenshot(path=str(shots / f"{extra}-{name}.png"), full_page=True)
        context.close()


def test_pages_work_without_javascript(base_url, browser):
    base, pieces = base_url
    context = browser.new_context(viewport=PHONE, java_script_enabled=False)
    page = context.new_page()
    page.goto(base + "/?requester=user2")
    assert page.locator("ol.pieces > li").count() == sum(
        p.acct.startswith("user2@") and p.visibility in ("public", "unlisted") for p in pieces
    )
    page.select_option("select[name=genre]", "pop")
    page.click("button[type=submit]")
    assert "genre=pop" in page.url and "requester=user2" in page.url
    response = page.goto(base + "/pieces/does-not-exist")
    assert response.status == 404 and page.locator("h1").inner_text() == "Not found"
    context.close()
