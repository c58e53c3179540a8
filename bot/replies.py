"""The words of the bot's replies, kept inside the platform's character limit.

Replies address the requester only (never the other accounts in the mention), and never
quote the request back, so nothing a requester writes is repeated by the bot: not even its
content warning, which the reply answers with one of its own words.
"""

from __future__ import annotations

from collections.abc import Sequence


def _fit(parts: Sequence[str], optional: Sequence[str], limit: int, tail: str = "") -> str:
    """The required parts, as many optional ones as fit, then ``tail``, within ``limit`` characters."""
    text = " ".join(p for p in parts if p)
    room = limit - (len(tail) + 1 if tail else 0)
    for extra in optional:
        if extra and len(text) + 1 + len(extra) <= room:
            text = f"{text} {extra}"
    text = text[:room]
    return f"{text} {tail}" if tail else text


CONTENT_WARNING = "A reply to a post with a content warning"


def content_warning(asked: str | None) -> str:
    """The reply's content warning: the bot's own words when the mention had one (whatever a requester
    put behind theirs stays there, out of the bot's posts), none otherwise."""
    return CONTENT_WARNING if asked and asked.strip() else ""


def minutes(seconds: float) -> str:
    seconds = round(seconds)
    return f"{seconds} s" if seconds < 60 else f"{seconds // 60}:{seconds % 60:02d} min"


def piece_reply(
    acct: str,
    genre: str,
    seconds: float,
    model_version: str,
    seed: int,
    link: str,
    notes: Sequence[str] = (),
    continuation: bool = False,
    limit: int = 500,
    key: str | None = None,
    caveat: str = "",
    again: str | None = None,
    key_followed: bool = True,
) -> str:
    """The reply carrying a piece; ``key`` the key asked (``key_followed``: whether the model could
    follow it), ``caveat`` what the model could not do (``not_followed``), ``again`` the words that
    ask for the piece again (genre and seed by default). The caveat may be cut to fit; the head never
    claims a key the piece was not composed in."""
    what = f"the continuation of your {genre} piece" if continuation else f"your {genre} piece"
    if key:
        what += f" in {key}" if key_followed else f" (you asked for {key})"
    head = f"@{acct} Here is {what}: {minutes(seconds)}, {genre} model {model_version}, seed {seed}."
    optional = [
        f"({caveat})" if caveat else "",
        f"({'; '.join(notes)})" if notes else "",
        f'Ask "{again or f"{genre} seed {seed}"}" to hear it again, or reply "more" to continue it.',
    ]
    return _fit([head], optional, limit, tail=link)


def came_out_in(heard_key: str | None) -> str:
    """The honest note for a piece whose model took the key asked but whose notes settled elsewhere."""
    return f"it came out in {heard_key}" if heard_key else "it came out in no clear key"


def not_followed(genre: str, key: str | None, density: float | None, heard_key: str | None) -> str:
    """The honest note for a piece whose model composed without the key or pace asked (no controls yet)."""
    if key and density is not None:
        cannot = "pick keys or set the pace"
    elif key:
        cannot = "pick keys"
    elif density is not None:
        return f"the {genre} model can't set the pace yet"
    else:
        return ""
    chose = f", so it chose {heard_key}" if heard_key else ""
    return f"the {genre} model can't {cannot} yet{chose}"


def help_reply(acct: str, genres: Sequence[str], unknown: str | None = None, limit: int = 500) -> str:
    names = ", ".join(genres) if genres else "none right now (my models are being trained)"
    opening = (
        f"I can't play {unknown} (yet)." if unknown else "Hi! Mention me with a genre and I'll compose a piano piece."
    )
    return _fit(
        [f"@{acct} {opening} Genres: {names}."],
        [
            'Add a length ("45 seconds", "1 min"), a mood ("calm", "wild"), a key ("in D minor"), a pace ("busy")'
            ' or "seed 1234" to replay a piece.',
            'Reply "more" to one of my pieces to continue it.',
        ],
        limit,
    )


def limit_reply(acct: str, per_hour: int, limit: int = 500) -> str:
    return _fit(
        [f"@{acct} That's {per_hour} pieces for you this hour, my limit per person, so I'll rest for a while."],
        ["Please ask again later!"],
        limit,
    )


def sorry_reply(acct: str, limit: int = 500) -> str:
    return _fit([f"@{acct} Sorry, I couldn't make your piece this time."], ["Please try again a little later."], limit)
