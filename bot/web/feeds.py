"""RSS 2.0 and Atom feeds of new pieces, each with its audio as an enclosure.

Built with ElementTree, which escapes every text and attribute, from ``PieceView``s, so a
private request's text never reaches a feed. ElementTree does not drop the characters XML 1.0
forbids (U+000B, U+FFFE, lone surrogates, ...), and one of them in a listener's words would make
the whole feed unreadable for every subscriber, so they are removed from every text and attribute.
Links are absolute (ARCHIVE_BASE_URL).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from email.utils import format_datetime

from bot.web.archive import PieceView

ATOM = "http://www.w3.org/2005/Atom"
NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")  # XML 1.0's Char, negated


def xml_text(text: str) -> str:
    """``text`` without the characters XML 1.0 forbids."""
    return NOT_XML.sub("", text)


def _serialize(root: ET.Element) -> bytes:
    """The document, every text and attribute first cleared of characters XML forbids."""
    for element in root.iter():
        if element.text:
            element.text = xml_text(element.text)
        for name, value in element.attrib.items():
            element.set(name, xml_text(value))
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def _title(piece: PieceView) -> str:
    return f"A {piece.duration:.0f}-second {piece.genre} piece (seed {piece.seed})"


def _summary(piece: PieceView) -> str:
    text = f"{piece.genre}, {piece.duration:.1f} s, model {piece.model_version}, seed {piece.seed}."
    if piece.description:
        text += f" {piece.description}"
    if piece.shown and piece.requester_acct and piece.content_warning:  # the text stays behind its warning
        text += f" Asked for by @{piece.requester_acct} (content warning: {piece.content_warning})."
    elif piece.shown and piece.requester_acct:
        text += f" Asked for by @{piece.requester_acct}: {piece.request_text}"
    return text


def rss(
    pieces: Sequence[PieceView], title: str, base_url: str, self_url: str, audio: Callable[[PieceView], tuple[str, int]]
) -> bytes:
    """``audio(piece)`` gives the enclosure's URL and length in bytes."""
    root = ET.Element("rss", version="2.0")
    root.set("xmlns:atom", ATOM)
    channel = ET.SubElement(root, "channel")
    ET.SubElement(channel, "title").text = title
    ET.SubElement(channel, "link").text = base_url + "/"
    ET.SubElement(channel, "description").text = "New pieces composed by the band bot."
    ET.SubElement(channel, "atom:link", href=self_url, rel="self", type="application/rss+xml")
    if pieces:
        ET.SubElement(channel, "lastBuildDate").text = format_datetime(pieces[0].created_at.astimezone(UTC))
    for piece in pieces:
        item = ET.SubElement(channel, "item")
        link = f"{base_url}/pieces/{piece.id}"
        ET.SubElement(item, "title").text = _title(piece)
        ET.SubElement(item, "link").text = link
        ET.SubElement(item, "guid", isPermaLink="true").text = link
        ET.SubElement(item, "pubDate").text = format_datetime(piece.created_at.astimezone(UTC))
        ET.SubElement(item, "category").text = piece.genre
        ET.SubElement(item, "description").text = _summary(piece)
        if piece.audio_mime:
            url, length = audio(piece)
            ET.SubElement(item, "enclosure", url=url, length=str(length), type=piece.audio_mime)
    return _serialize(root)


def atom(
    pieces: Sequence[PieceView], title: str, base_url: str, self_url: str, audio: Callable[[PieceView], tuple[str, int]]
) -> bytes:
    ET.register_namespace("", ATOM)
    root = ET.Element(f"{{{ATOM}}}feed")
    ET.SubElement(root, f"{{{ATOM}}}title").text = title
    ET.SubElement(root, f"{{{ATOM}}}id").text = self_url
    ET.SubElement(root, f"{{{ATOM}}}link", href=self_url, rel="self")
    ET.SubElement(root, f"{{{ATOM}}}link", href=base_url + "/", rel="alternate", type="text/html")
    updated = pieces[0].created_at if pieces else datetime.now(UTC)
    ET.SubElement(root, f"{{{ATOM}}}updated").text = updated.astimezone(UTC).isoformat()
    author = ET.SubElement(root, f"{{{ATOM}}}author")
    ET.SubElement(author, f"{{{ATOM}}}name").text = "band"
    for piece in pieces:
        entry = ET.SubElement(root, f"{{{ATOM}}}entry")
        link = f"{base_url}/pieces/{piece.id}"
        ET.SubElement(entry, f"{{{ATOM}}}title").text = _title(piece)
        ET.SubElement(entry, f"{{{ATOM}}}id").text = link
        ET.SubElement(entry, f"{{{ATOM}}}link", href=link, rel="alternate", type="text/html")
        ET.SubElement(entry, f"{{{ATOM}}}updated").text = piece.created_at.astimezone(UTC).isoformat()
        ET.SubElement(entry, f"{{{ATOM}}}category", term=piece.genre)
        ET.SubElement(entry, f"{{{ATOM}}}summary").text = _summary(piece)
        if piece.audio_mime:
            url, length = audio(piece)
            ET.SubElement(
                entry, f"{{{ATOM}}}link", href=url, rel="enclosure", type=piece.audio_mime, length=str(length)
            )
    return _serialize(root)
