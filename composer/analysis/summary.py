"""What a listener would say a piece sounds like, measured from its notes: pace, register, loudness, key.

The composer sends this with every piece, so callers describe a piece (alt text, archive
pages) without reading its MIDI again.
"""

from __future__ import annotations

from collections.abc import Sequence
from statistics import median

from composer.codec.events import Note
from composer.codec.keys import estimate_key
from composer.contract import MusicSummary


def summarize(notes: Sequence[Note], seconds: float) -> MusicSummary:
    """The piece's summary; ``seconds`` is its length (notes per second are counted over it)."""
    if not notes:
        return MusicSummary(notes=0, notes_per_second=0.0)
    pitches = [n.pitch for n in notes]
    key = estimate_key(notes)
    return MusicSummary(
        notes=len(notes),
        notes_per_second=len(notes) / max(seconds, 1e-3),
        lowest_pitch=min(pitches),
        highest_pitch=max(pitches),
        median_pitch=float(median(pitches)),
        mean_velocity=sum(n.velocity for n in notes) / len(notes),
        key=key[0].name if key else None,
        key_clarity=key[1] if key else None,
    )
