"""What a mention asks for: genre, length, mood and seed, read from free text.

People write "@band a calm jig, 1 min please" or "<p>folk music!! seed 42</p>", so the
parser is forgiving: HTML is stripped, other @handles and links are ignored, genres are
found by name, synonym or near miss, and anything it cannot place falls back to a
default. It never raises: whatever the text, the worst outcome is a help reply.
"""

from __future__ import annotations

import difflib
import html
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from html.parser import HTMLParser

from bot.db import Kind
from composer.contract import MAX_SEED

MAX_TEXT = 5_000  # a mention is at most a few hundred characters; longer input is cut, never parsed whole

SYNONYMS: dict[str, str] = {
    "classic": "classical",
    "classics": "classical",
    "classical music": "classical",
    "baroque": "classical",
    "romantic": "classical",
    "sonata": "classical",
    "nocturne": "classical",
    "etude": "classical",
    "prelude": "classical",
    "chopin": "classical",
    "bach": "classical",
    "mozart": "classical",
    "beethoven": "classical",
    "schubert": "classical",
    "liszt": "classical",
    "debussy": "classical",
    "k-pop": "pop",
    "kpop": "pop",
    "j-pop": "pop",
    "jpop": "pop",
    "c-pop": "pop",
    "cpop": "pop",
    "pop music": "pop",
    "pop song": "pop",
    "popular": "pop",
    "folk music": "folk",
    "folky": "folk",
    "jig": "folk",
    "jigs": "folk",
    "reel": "folk",
    "reels": "folk",
    "hornpipe": "folk",
    "celtic": "folk",
    "irish": "folk",
    "scottish": "folk",
    "trad": "folk",
    "traditional": "folk",
    "fiddle tune": "folk",
    "country dance": "folk",
}

OTHER_GENRES = frozenset(
    [
        "jazz",
        "blues",
        "rock",
        "metal",
        "punk",
        "techno",
        "house",
        "trance",
        "edm",
        "dubstep",
        "rap",
        "hip-hop",
        "hiphop",
        "trap",
        "reggae",
        "ska",
        "country",
        "opera",
        "gospel",
        "funk",
        "soul",
        "disco",
        "grunge",
        "emo",
        "ambient",
        "lofi",
        "lo-fi",
        "drill",
        "salsa",
        "samba",
        "tango",
        "bossa",
        "swing",
        "bluegrass",
        "r&b",
        "rnb",
        "grime",
        "garage",
    ]
)

CALM = {
    "calm": 0.85,
    "gentle": 0.85,
    "soft": 0.85,
    "quiet": 0.85,
    "peaceful": 0.8,
    "relaxing": 0.8,
    "relaxed": 0.8,
    "sleepy": 0.75,
    "soothing": 0.8,
    "slow": 0.85,
    "simple": 0.8,
    "tender": 0.85,
    "sad": 0.9,
    "melancholic": 0.9,
    "dreamy": 0.9,
}
WILD = {
    "wild": 1.15,
    "crazy": 1.2,
    "chaotic": 1.2,
    "weird": 1.15,
    "strange": 1.1,
    "experimental": 1.15,
    "adventurous": 1.1,
    "energetic": 1.1,
    "lively": 1.05,
    "upbeat": 1.05,
    "happy": 1.05,
    "bold": 1.1,
    "surprising": 1.1,
}
MOODS = {**CALM, **WILD}

HELP_WORDS = frozenset({"help", "commands", "usage", "genres", "howto", "how-to", "?"})
MORE_WORDS = frozenset({"more", "again", "continue", "encore", "another", "longer"})
MORE_FILLER = frozenset({"please", "pls", "thanks", "thank", "you", "some", "a", "bit", "one", "the"})
COMPOSE_WORDS = frozenset(
    [
        "play",
        "compose",
        "write",
        "make",
        "give",
        "something",
        "piece",
        "song",
        "tune",
        "music",
        "melody",
        "surprise",
        "me",
        "improvise",
    ]
)
NUMBER_WORDS = {
    "a": 1,
    "an": 1,
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
    "fifteen": 15,
    "twenty": 20,
    "thirty": 30,
    "forty": 40,
    "fifty": 50,
    "sixty": 60,
    "ninety": 90,
    "half a": 0.5,
}

_HANDLE = re.compile(r"(?<![\w/])@[\w.\-]+(?:@[\w.\-]+)?", re.UNICODE)
_URL = re.compile(r"\b(?:https?://|www\.)\S+", re.IGNORECASE)
_SEED = re.compile(r"\bseed\s*(?:[:=#]|no\.?|number|of|is)?\s*(\d{1,25})\b", re.IGNORECASE)
_CLOCK = re.compile(r"\b(\d{1,2}):([0-5]\d)\b")
_NUMBER = r"(\d{1,6}(?:[.,]\d{1,3})?|" + "|".join(sorted(map(re.escape, NUMBER_WORDS), key=len, reverse=True)) + ")"
_LENGTH = re.compile(
    _NUMBER + r"[\s\-]*(seconds?|secs?|s|minutes?|mins?|m)\b(?:\s+and\s+(?:a\s+)?half)?", re.IGNORECASE
)
_WORD = re.compile(r"[a-z0-9&]+(?:-[a-z0-9]+)*")


@dataclass(frozen=True)
class Limits:
    min_seconds: float = 5.0
    max_seconds: float = 120.0
    default_seconds: float = 30.0


@dataclass(frozen=True)
class Request:
    kind: Kind  # COMPOSE, MORE or HELP: the parser reads no other kind
    text: str
    genre: str | None = None
    seconds: float = 30.0
    temperature: float = 1.0
    seed: int | None = None
    moods: tuple[str, ...] = ()
    unknown_genre: str | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)  # what the reply should mention (clamped length, ...)


class _TextExtractor(HTMLParser):
    """Mastodon's status HTML to text: <br> and paragraphs become line breaks, tags vanish."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("br", "p", "div", "li"):
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("p", "div", "li"):
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


def strip_html(markup: str) -> str:
    """Plain text of status HTML (script/style content included as text, never interpreted)."""
    parser = _TextExtractor()
    try:
        parser.feed(markup[:MAX_TEXT])
        parser.close()
        text = "".join(parser.parts)
    except Exception:  # HTMLParser is lenient, but a parse error must not cost the request
        text = re.sub(r"<[^>]*>", " ", html.unescape(markup[:MAX_TEXT]))
    return re.sub(r"[\x00-\x08\x0b-\x1f\x7f]", " ", text)


def clean_text(markup: str) -> str:
    """The words of a mention: HTML stripped, handles and links removed, whitespace collapsed."""
    text = _URL.sub(" ", _HANDLE.sub(" ", strip_html(markup)))
    return re.sub(r"\s+", " ", text).strip()


def _seconds(text: str) -> float | None:
    if clock := _CLOCK.search(text):
        return int(clock.group(1)) * 60 + int(clock.group(2))
    match = _LENGTH.search(text)
    if not match:
        return None
    raw, unit = match.group(1).lower().replace(",", "."), match.group(2).lower()
    number = float(raw) if raw[0].isdigit() else float(NUMBER_WORDS[raw])
    if match.group(0).lower().rstrip().endswith("half"):
        number += 0.5
    return number * 60 if unit.startswith("m") else number


def genre_aliases(infos: Iterable[object]) -> dict[str, str]:
    """Alias -> genre from the composer's genre list (``GenreInfo.aliases``, from each manifest).

    Genres without aliases (or a composer too old to send them) simply add nothing.
    """
    out: dict[str, str] = {}
    for info in infos:
        name = str(getattr(info, "name", "") or "").lower()
        for alias in getattr(info, "aliases", None) or ():
            if name and isinstance(alias, str) and alias.strip():
                out.setdefault(alias.strip().lower(), name)
    return out


def _find_genre(
    words: list[str], text: str, genres: Iterable[str], aliases: Mapping[str, str] | None = None
) -> tuple[str | None, str | None]:
    """(genre, unknown genre named) from the words; synonyms and aliases may span two words.

    A genre's own name beats its manifest's aliases, which beat the built-in SYNONYMS
    (a served "chorale" genre that lists "bach" takes "bach" from classical).
    """
    served = {g.lower() for g in genres}
    aliases = aliases or {}
    vocabulary = (
        {k: v for k, v in SYNONYMS.items() if v in served}
        | {k: v for k, v in aliases.items() if v in served}
        | {g: g for g in served}
    )
    for phrase, genre in sorted(vocabulary.items(), key=lambda kv: -len(kv[0])):  # multi-word names first
        if (" " in phrase or "-" in phrase) and re.search(rf"(?<![\w-]){re.escape(phrase)}(?![\w-])", text):
            return genre, None
    for word in words:
        if word in vocabulary:
            return vocabulary[word], None
    for word in words:
        if word in OTHER_GENRES or word in SYNONYMS or word in aliases:  # a genre we know of but cannot play (yet)
            return None, word
    for word in words:
        if len(word) >= 4 and word not in MOODS and word not in COMPOSE_WORDS:
            close = difflib.get_close_matches(word, list(vocabulary), n=1, cutoff=0.75)
            if close:
                return vocabulary[close[0]], None
    return None, None


def parse_request(
    markup: str, genres: Iterable[str], limits: Limits | None = None, aliases: Mapping[str, str] | None = None
) -> Request:
    """Read one mention. ``genres`` are those the composer can play now; ``aliases`` maps
    more words to genres (``genre_aliases`` of the composer's genre list)."""
    limits = limits or Limits()
    genres = list(genres)
    aliases = dict(aliases or {})
    try:
        text = clean_text(markup)
        lower = text.lower()
        words = _WORD.findall(lower)
    except Exception:  # defensive: the fuzz test holds this, but a reply must still go out
        return Request(Kind.HELP, "")
    if not words or (set(words) & HELP_WORDS and not set(words) & (set(genres) | set(SYNONYMS) | set(aliases))):
        return Request(Kind.HELP, text)

    notes: list[str] = []
    seed = None
    if match := _SEED.search(lower):
        value = int(match.group(1))
        seed = value if value <= MAX_SEED else None
        if seed is None:
            notes.append("that seed is too large, so I picked a new one")

    seconds = _seconds(lower)
    if seconds is None:
        seconds = limits.default_seconds
    elif not limits.min_seconds <= seconds <= limits.max_seconds:
        seconds = min(max(seconds, limits.min_seconds), limits.max_seconds)
        notes.append(f"pieces are {limits.min_seconds:g}–{limits.max_seconds:g} s long")

    moods = tuple(w for w in dict.fromkeys(words) if w in MOODS)
    temperature = 1.0
    if moods:
        temperature = round(sum(MOODS[m] for m in moods) / len(moods), 3)

    if set(words) & MORE_WORDS and set(words) <= MORE_WORDS | MORE_FILLER:  # "thanks!" alone asks for nothing
        return Request(Kind.MORE, text, seconds=seconds, temperature=temperature, moods=moods, seed=seed)

    genre, unknown = _find_genre(words, lower, genres, aliases)
    if genre is None and (unknown is not None or not (set(words) & COMPOSE_WORDS or moods or seed is not None)):
        return Request(Kind.HELP, text, unknown_genre=unknown)
    return Request(Kind.COMPOSE, text, genre, float(seconds), temperature, seed, moods, None, tuple(notes))
