"""RSS and Atom stay well-formed XML whatever a listener writes (issue #17)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from bot.web import feeds
from bot.web.archive import PieceView

ATOM = "{http://www.w3.org/2005/Atom}"


def piece(text: str, warning: str | None, acct: str, description: str) -> PieceView:
    return PieceView(
        id="6f140f98-0000-4000-8000-000000000001",
        genre="folk",
        model_version="v4",
        seed=7,
        temperature=1.0,
        top_p=0.95,
        seconds_requested=30,
        duration=30.2,
        notes=100,
        description=description,
        created_at=datetime(2026, 11, 27, tzinfo=UTC),
        audio_ext="mp3",
        audio_path="6f.mp3",
        audio_mime="audio/mpeg",
        has_pianoroll=True,
        parent_id=None,
        bot_account="band",
        shown=True,
        request_text=text,
        content_warning=warning,
        requester_acct=acct,
    )


def build(pieces: list[PieceView]) -> tuple[bytes, bytes]:
    audio = lambda p: (f"https://archive.example/media/{p.id}.mp3", 1234)  # noqa: E731
    base, title = "https://archive.example", "band: new pieces"
    return (
        feeds.rss(pieces, title, base, f"{base}/feed.rss", audio),
        feeds.atom(pieces, title, base, f"{base}/feed.atom", audio),
    )


def test_a_warning_with_characters_xml_forbids_leaves_the_feeds_valid():
    rss, atom = build([piece("folk please", "spoilers \ufffe\x0b ahead", "alice", "A piece.")])
    summary = ET.fromstring(rss).find("channel/item/description").text  # expat refuses a malformed document
    assert "content warning: spoilers  ahead" in summary
    assert ET.fromstring(atom).find(f"{ATOM}entry/{ATOM}summary").text == summary


@settings(max_examples=300, deadline=None)
@given(
    text=st.text(max_size=200),
    warning=st.one_of(st.none(), st.text(max_size=80)),
    acct=st.text(min_size=1, max_size=40),
    description=st.text(max_size=200),
)
def test_the_feeds_are_well_formed_whatever_a_listener_writes(text, warning, acct, description):
    rss, atom = build([piece(text, warning, acct, description)])
    item = ET.fromstring(rss).find("channel/item")
    entry = ET.fromstring(atom).find(f"{ATOM}entry")
    summary = item.find("description").text
    assert entry.find(f"{ATOM}summary").text == summary
    kept = feeds.xml_text(warning or text)  # what XML can carry of the listener's words is all there
    # XML parsers turn a carriage return (and CR LF) into a line feed
    assert kept.replace("\r\n", "\n").replace("\r", "\n").strip() in summary
