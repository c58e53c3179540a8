"""Alt text for a piece, from the composer's summary of it: what a listener would say it sounds like.

Screen-reader users meet the attachment's description instead of the sound's first
seconds, so it says the genre and length, the pace (notes per second), the register,
the loudness and the most likely key (the composer measures it with Krumhansl-Kessler
key profiles), beside the key the mention asked for, if it asked for one.
"""

from __future__ import annotations

from composer.contract import TONICS, MusicSummary

CLEAR_KEY = 0.6  # below this correlation the notes fit no key well enough to name one


def pitch_name(pitch: int) -> str:
    return f"{TONICS[pitch % 12]}{pitch // 12 - 1}"


def pace(notes_per_second: float) -> str:
    for limit, words in ((1.5, "slow and spacious"), (3.5, "unhurried"), (6.5, "flowing"), (10, "lively")):
        if notes_per_second < limit:
            return words
    return "fast and busy"


def register(median_pitch: float, lowest: int, highest: int) -> str:
    where = "low" if median_pitch < 52 else "middle" if median_pitch < 72 else "high"
    return f"mostly in the {where} register ({pitch_name(lowest)} to {pitch_name(highest)})"


def loudness(mean_velocity: float) -> str:
    return "soft" if mean_velocity < 50 else "moderately loud" if mean_velocity < 85 else "loud"


def describe(summary: MusicSummary, genre: str, seconds: float, asked_key: str | None = None) -> str:
    """One or two plain sentences, well under Mastodon's 1,500-character limit; ``asked_key`` (the key
    the mention asked for) is named beside the key heard."""
    length = f"{seconds:.0f}-second" if seconds < 90 else f"{seconds / 60:.1f}-minute"
    head = f"A {length} {genre} piano piece composed by a neural network"
    if not summary.notes:
        return f"{head}. It is almost silent."
    parts = [f"{pace(summary.notes_per_second)} ({summary.notes_per_second:.1f} notes a second)"]
    if summary.median_pitch is not None and summary.lowest_pitch is not None and summary.highest_pitch is not None:
        parts.append(register(summary.median_pitch, summary.lowest_pitch, summary.highest_pitch))
    if summary.mean_velocity is not None:
        parts.append(loudness(summary.mean_velocity))
    clear = summary.key is not None and summary.key_clarity is not None and summary.key_clarity > CLEAR_KEY
    if clear and asked_key == summary.key:
        parts.append(f"in or around {summary.key}, as asked")
    elif clear:
        parts.append(f"in or around {summary.key}" + (f" ({asked_key} was asked for)" if asked_key else ""))
    elif asked_key:
        parts.append(f"in no clear key ({asked_key} was asked for)")
    return f"{head}: {', '.join(parts)}."
