"""What a mention asks for: genre, length, mood, key, pace and seed, read from free text.

People write "@band a calm jig, 1 min please", "<p>folk music!! seed 42</p>" or "something
folk in D minor, busy", so the parser is forgiving: HTML is stripped, other @handles and
links are ignored, genres are found by name, synonym or near miss, and anything it cannot
place falls back to a default. It never raises: whatever the text, the worst outcome is a
help reply (a key it cannot read is a note in the reply, never a help reply).

Keys are read as whole words, and a lone letter only where it cannot be ordinary English:
"C major", "e flat", "F#", "B-flat minor" (a mode or accidental follows), "in D", "in the
key of A" ("in" or "key of" before it). "a jig", "plan b", "in a minute" and "a flat melody"
name no key (a spelled "A flat" needs a mode, "key" or "in" with it); "a minor-key tune" asks
for the mode alone (the tonic is then picked from the mention, so a retry asks the same).

Lengths too are whole words: a number, then a unit ("45s", "2 min", "twenty seconds", "1:15");
"I am", "as a gift", "80s pop" and "at 10:30" name none.
"""

from __future__ import annotations

import difflib
import html
import itertools
import re
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from html.parser import HTMLParser

from bot.db import Kind
from composer.contract import DEFAULT_TEMPERATURE, DENSITY_WORDS, MAX_SEED, UnknownKeyError, key_name, read_key

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
MORE_FILLER = frozenset({"please", "pls", "thanks", "thank", "you", "some", "a", "bit", "one", "the"}) | {
    *("in", "but", "and", "key", "of", "now")  # "more, but in D minor" continues in that key
}
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
_CLOCK = re.compile(  # "1:15" is a length; "at 10:30" and "9:30 pm" are times of day
    r"(?<![\w:])(?<!\bat )(?<!\bby )(?<!\buntil )(\d{1,2}):([0-5]\d)\b(?!\s*[ap]\.?m\b)", re.IGNORECASE
)
_DIGITS = r"\d{1,6}(?:[.,]\d{1,3})?"
_NUMBER_WORD = "|".join(sorted(map(re.escape, NUMBER_WORDS), key=len, reverse=True))
_UNIT_WORD = r"seconds?|secs?|minutes?|mins?"
_LENGTH = re.compile(  # numbers and units as whole words: not "banana minute", "am" (a m) nor "as" (a s)
    rf"(?<![\w.,])(?:(?P<digits>{_DIGITS})[\s\-]*(?P<unit>{_UNIT_WORD}|s|m)"  # "45s", "2 m", "10 secs"
    rf"|(?P<words>{_NUMBER_WORD})[\s\-]+(?P<word_unit>{_UNIT_WORD}))"  # "a minute", "twenty seconds"
    r"(?![\w'’])(?:\s+and\s+(?:a\s+)?half)?",
    re.IGNORECASE,
)
_DECADE = re.compile(r"(?:\d0|\d\d\d0)s", re.IGNORECASE)  # "80s pop", "1920s": an era, not a length
_WORD = re.compile(r"[a-z0-9&]+(?:-[a-z0-9]+)*")

# A key: a letter as a whole word, then an accidental, a mode and "key", each optional.
_END = r"(?![\w'’#♯♭])"
_KEY = re.compile(
    r"(?<![\w'’.#♯♭-])(?P<letter>[a-g])"
    rf"(?:(?P<accidental>\s*[#♯♭]|[\s-]*(?:sharp|flat){_END})|(?P<attached>b)(?=m?{_END}))?"
    rf"(?:(?P<mode>[\s-]*(?:major|minor){_END})|(?P<short>[\s-]*(?:maj|min){_END}|m{_END}))?"
    rf"(?P<keyword>[\s-]*key{_END})?"
    r"(?![\w'’#♯♭]|[.\-]\w)",
    re.IGNORECASE,
)
_BEFORE_KEY = re.compile(r"(?:^|[^\w'’])(?:in|key\s+of)\s+$", re.IGNORECASE)  # "in D", "the key of D"
_CLAUSE_END = re.compile(r"\s*(?:$|[,;:.!?)])")
_MODE_ONLY = re.compile(
    rf"(?<![\w'’])(?:(?P<mode>major|minor)[\s-]*key|in\s+(?P<mode2>major|minor)){_END}", re.IGNORECASE
)
_OTHER_MODES = "dorian|phrygian|lydian|mixolydian|locrian|aeolian|ionian"
_OTHER_MODE_AFTER = re.compile(rf"[\s-]*(?:{_OTHER_MODES}){_END}", re.IGNORECASE)
_UNKNOWN_KEY = re.compile(
    rf"(?<![\w'’])(?:in|key\s+of)\s+[h-z](?:\s*[#♯♭]|[\s-]*(?:sharp|flat))?[\s-]*(?:major|minor){_END}"
    rf"|(?<![\w'’])(?:[a-h](?:\s*[#♯♭]|[\s-]*(?:sharp|flat))?[\s-]*)?(?:{_OTHER_MODES}){_END}",
    re.IGNORECASE,
)
UNKNOWN_KEY_NOTE = "I can't read that key, so the model chose one: name one like D minor, F♯ major or B flat minor"


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
    key: str | None = None  # as composer.contract.key_name writes it: "E♭ major"
    density: float | None = None  # notes per second (composer.contract.DENSITY_WORDS)


@dataclass(frozen=True)
class KeyAsked:
    """The key a mention names, if any: ``key`` (canonical), or ``unreadable`` when it names one we cannot
    read; ``spans`` are where the key words are in the text (left out of the rest of the parsing)."""

    key: str | None = None
    unreadable: bool = False
    spans: tuple[tuple[int, int], ...] = ()

    @property
    def asked(self) -> bool:
        return self.key is not None or self.unreadable


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


def strip_html(markup: str, max_chars: int | None = MAX_TEXT) -> str:
    """Plain text of status HTML (script/style content included as text, never interpreted), from its
    first ``max_chars`` characters (None: all of it, for a bio, where a #nobot at the end counts)."""
    markup = markup[:max_chars]
    parser = _TextExtractor()
    try:
        parser.feed(markup)
        parser.close()
        text = "".join(parser.parts)
    except Exception:  # HTMLParser is lenient, but a parse error must not cost the request
        text = re.sub(r"<[^>]*>", " ", html.unescape(markup))
    return re.sub(r"[\x00-\x08\x0b-\x1f\x7f]", " ", text)


def clean_text(markup: str) -> str:
    """The words of a mention: HTML stripped, handles and links removed, whitespace collapsed."""
    text = _URL.sub(" ", _HANDLE.sub(" ", strip_html(markup)))
    return re.sub(r"\s+", " ", text).strip()


def _seconds(text: str) -> float | None:
    """The length a mention asks for, in seconds; None when it names none."""
    if clock := _CLOCK.search(text):
        return int(clock.group(1)) * 60 + int(clock.group(2))
    for match in _LENGTH.finditer(text):
        if match.group("digits") and _DECADE.fullmatch(match.group(0).strip()):
            continue
        raw = (match.group("digits") or match.group("words")).lower().replace(",", ".")
        unit = (match.group("unit") or match.group("word_unit")).lower()
        number = float(raw) if raw[0].isdigit() else float(NUMBER_WORDS[re.sub(r"\s+", " ", raw)])
        if match.group(0).lower().rstrip().endswith("half"):
            number += 0.5
        return number * 60 if unit.startswith("m") else number
    return None


def _is_key(match: re.Match[str], text: str) -> bool:
    """Whether a key-shaped ``match`` in ``text`` names a key rather than being ordinary English."""
    letter, accidental, attached, mode, short, keyword = match.group(
        "letter", "accidental", "attached", "mode", "short", "keyword"
    )
    if not (mode or short) and _OTHER_MODE_AFTER.match(text, match.end()):
        return False  # "D dorian": a mode we cannot play (read as an unknown key)
    if letter == "a" and keyword and (mode or short) and not accidental:
        return False  # "a minor-key tune": the article, then the mode alone
    spelled = accidental is not None and accidental.strip(" -").lower() in ("flat", "sharp")
    if letter.lower() == "a" and spelled and not (mode or short or keyword):
        return _BEFORE_KEY.search(text, max(0, match.start() - 24), match.start()) is not None  # "a flat melody"
    if accidental or mode:
        return True  # "C major", "e flat", "F#", "B-flat minor"
    if not _BEFORE_KEY.search(text, max(0, match.start() - 24), match.start()):  # a window: linear in the text
        return False  # "a jig", "plan b", "vitamin C", "Eb" alone, "DM me"
    if letter.isupper():
        return True  # "in A", "in Eb", "in Dm", "the key of G"
    if attached:
        return False  # "the size in gb"
    if letter == "a":  # "in a minute", "in a calm mood": only "in a" ending the clause is the key
        return not short and _CLAUSE_END.match(text, match.end()) is not None
    return True  # "in d", "in c min"


def _key_text(match: re.Match[str]) -> str:
    """The matched key as ``read_key`` takes it: "E flat minor"."""
    accidental = (match.group("accidental") or match.group("attached") or "").strip(" -").lower()
    accidental = {"#": "sharp", "♯": "sharp", "♭": "flat", "b": "flat"}.get(accidental, accidental)
    mode = (match.group("mode") or match.group("short") or "").strip(" -").lower()
    mode = "minor" if mode in ("minor", "min", "m") else "major"
    return f"{match.group('letter')} {accidental} {mode}".replace("  ", " ")


def read_key_asked(text: str, pick: str) -> KeyAsked:
    """The key ``text`` asks for: a named key, else a mode alone (its tonic picked by hashing ``pick``),
    else an unreadable key ("in H major", "D dorian"); an empty KeyAsked when it names none."""
    for match in _KEY.finditer(text):
        if _is_key(match, text):
            try:
                key = key_name(*read_key(_key_text(match)))
            except UnknownKeyError:  # cannot happen for what _KEY matches; an unreadable key is a note
                return KeyAsked(unreadable=True, spans=(match.span(),))
            return KeyAsked(key, spans=(match.span(),))
    if unknown := _UNKNOWN_KEY.search(text):
        return KeyAsked(unreadable=True, spans=(unknown.span(),))
    if mode_only := _MODE_ONLY.search(text):
        mode = (mode_only.group("mode") or mode_only.group("mode2")).lower()
        tonic = zlib.crc32(pick.encode("utf-8", "replace")) % 12
        return KeyAsked(key_name(tonic, mode), spans=(mode_only.span(),))
    return KeyAsked()


def _blank(text: str, spans: Iterable[tuple[int, int]]) -> str:
    for start, end in spans:
        text = text[:start] + " " * (end - start) + text[end:]
    return text


def _density(words: list[str]) -> float | None:
    """Notes per second from the pace words: a pace word ("busy") beats a mood that implies one ("calm"),
    then the first one said."""
    said = [w for w in dict.fromkeys(words) if w in DENSITY_WORDS]
    if not said:
        return None
    return DENSITY_WORDS[min(said, key=lambda w: (w in MOODS, said.index(w)))]


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
        if len(word) >= 4 and word not in MOODS and word not in COMPOSE_WORDS and word not in DENSITY_WORDS:
            close = difflib.get_close_matches(word, list(vocabulary), n=1, cutoff=0.75)
            if close:
                return vocabulary[close[0]], None
    return None, None


def parse_request(
    markup: str,
    genres: Iterable[str],
    limits: Limits | None = None,
    aliases: Mapping[str, str] | None = None,
    pick: str | None = None,
) -> Request:
    """Read one mention. ``genres`` are those the composer can play now; ``aliases`` maps
    more words to genres (``genre_aliases`` of the composer's genre list); ``pick`` (the
    mention's id; its text when not given) picks the tonic of a key asked by its mode alone."""
    limits = limits or Limits()
    genres = list(genres)
    aliases = dict(aliases or {})
    try:
        text = clean_text(markup)
        key = read_key_asked(text, text if pick is None else pick)
        lower = _blank(text, key.spans).lower()  # the key's words are read: they name no genre, length or mood
        words = _WORD.findall(lower)
    except Exception:  # defensive: the fuzz test holds this, but a reply must still go out
        return Request(Kind.HELP, "")
    if not (words or key.asked) or (
        set(words) & HELP_WORDS and not set(words) & (set(genres) | set(SYNONYMS) | set(aliases))
    ):
        return Request(Kind.HELP, text)

    notes: list[str] = []
    seed = None
    if match := _SEED.search(lower):
        value = int(match.group(1))
        seed = value if value <= MAX_SEED else None
        if seed is None:
            notes.append("that seed is too large, so I picked a new one")
    if key.unreadable:
        notes.append(UNKNOWN_KEY_NOTE)

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
    density = _density(words)
    asked = dict(key=key.key, density=density, notes=tuple(notes))

    # "thanks!" alone asks for nothing; "more, in D minor" or "more, but busy" continues in that key or pace
    if set(words) & MORE_WORDS and set(words) <= MORE_WORDS | MORE_FILLER | set(DENSITY_WORDS):
        return Request(Kind.MORE, text, seconds=seconds, temperature=temperature, moods=moods, seed=seed, **asked)

    genre, unknown = _find_genre(words, lower, genres, aliases)
    wants_piece = set(words) & COMPOSE_WORDS or moods or seed is not None or key.asked or density is not None
    if genre is None and (unknown is not None or not wants_piece):
        return Request(Kind.HELP, text, unknown_genre=unknown)
    return Request(Kind.COMPOSE, text, genre, float(seconds), temperature, seed, moods, None, **asked)


MAX_MOOD_WORDS = 3  # mood words mixed to give a temperature, besides one pace word


@lru_cache(maxsize=256)
def asking_words(temperature: float, density: float | None = None) -> str | None:
    """Mood and pace words a mention can carry to be composed at ``temperature`` and ``density``: ""
    for the defaults, None when no mix of up to MAX_MOOD_WORDS moods and one pace word gives both exactly.

    The parser averages the temperatures of the mood words it finds (``MOODS``) and takes the
    density of a pace word (``DENSITY_WORDS``; "calm" and "slow" are both), so several words
    map to one value and a mix maps to the mean: the first mix found (fewest words, in the
    parser's order) is checked against the parser itself before it is offered.
    """
    wanted = round(temperature, 3)
    if density is None:
        paces: list[str | None] = [None]
    else:
        paces = [w for w, value in DENSITY_WORDS.items() if value == density]
    plain_moods = [m for m in MOODS if m not in DENSITY_WORDS]  # moods that leave the pace alone
    for size in range(MAX_MOOD_WORDS + 1):
        for pace in paces:
            for words in itertools.combinations(plain_moods, size):
                said = [*words, pace] if pace else list(words)
                moods = [w for w in said if w in MOODS]
                mean = round(sum(MOODS[m] for m in moods) / len(moods), 3) if moods else DEFAULT_TEMPERATURE
                if mean != wanted:
                    continue
                text = " ".join(said)
                heard = parse_request(text, [])
                if round(heard.temperature, 3) == wanted and heard.density == density:
                    return text
    return None


def replay_text(
    genre: str,
    seed: int,
    temperature: float = DEFAULT_TEMPERATURE,
    key: str | None = None,
    density: float | None = None,
    seconds: float | None = None,
) -> str:
    """The words of a mention that asks for a piece again: "calm folk in D minor seed 7, 30 seconds".

    When no mix of mood words gives ``temperature`` exactly, the words ask at the default one
    (with the pace kept): the same seed then gives a related piece, not the same.
    """
    words = asking_words(temperature, density)
    if words is None:
        words = asking_words(DEFAULT_TEMPERATURE, density) or ""
    text = f"{words} {genre}".lstrip()
    if key:
        text += f" in {key}"
    text += f" seed {seed}"
    return f"{text}, {seconds:g} seconds" if seconds is not None else text
