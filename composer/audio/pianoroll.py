"""Piano-roll pictures of pieces: the still frame of the MP4 for X, and a thumbnail.

Drawn with matplotlib's object API on an Agg canvas (no pyplot state), so it is safe in
worker threads and never opens a window. The layout scales with the requested size, so
1280x720 for the video and 640x360 for a thumbnail look alike.
"""

from __future__ import annotations

import io
import os
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import PolyCollection
from matplotlib.colors import LinearSegmentedColormap
from matplotlib.figure import Figure

from composer.codec.events import Note

BASE_WIDTH_IN = 12.8  # the figure's layout is designed at 1280x720 px, 100 dpi
BACKGROUND = "#14161c"
PANEL = "#1b1e26"
BLACK_KEY_ROW = "#171920"
GRID = "#2c303b"
TEXT = "#c9ccd4"
NOTE_COLOURS = LinearSegmentedColormap.from_list("roll", ["#5b6ee1", "#b45fd6", "#f0609a", "#ffb454"])
SOFT, LOUD = 20, 115  # velocities mapped to the ends of the colour scale
BLACK_KEYS = {1, 3, 6, 8, 10}
PITCH_MARGIN = 2


def pitch_name(pitch: int) -> str:
    """Scientific pitch name of a MIDI note for axis labels (60 is C4)."""
    names = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
    return f"{names[pitch % 12]}{pitch // 12 - 1}"


def _note_polygons(notes: Sequence[Note], min_width: float) -> np.ndarray:
    """One rectangle per note, a little shorter than a semitone so neighbours stay apart."""
    start = np.array([n.start for n in notes])
    end = np.maximum(np.array([n.end for n in notes]), start + min_width)
    low = np.array([n.pitch for n in notes]) - 0.42
    high = low + 0.84
    return np.stack(
        [np.stack([start, low], 1), np.stack([end, low], 1), np.stack([end, high], 1), np.stack([start, high], 1)], 1
    )


def draw_pianoroll(notes: Sequence[Note], title: str | None = None, size: tuple[int, int] = (1280, 720)) -> Figure:
    """A piano-roll figure: seconds across, pitch up, colour and opacity by velocity."""
    if not notes:
        raise ValueError("no notes to draw")
    width_px, height_px = size
    dpi = width_px / BASE_WIDTH_IN
    fig = Figure(figsize=(BASE_WIDTH_IN, height_px / dpi), dpi=dpi, facecolor=BACKGROUND)
    FigureCanvasAgg(fig)
    top = 0.88 if title else 0.95
    ax = fig.add_axes((0.07, 0.1, 0.9, top - 0.1), facecolor=PANEL)

    lowest = min(n.pitch for n in notes) - PITCH_MARGIN
    highest = max(n.pitch for n in notes) + PITCH_MARGIN
    length = max(n.end for n in notes)
    x_end = length * 1.01 + 0.05
    ax.set_xlim(0, x_end)
    ax.set_ylim(lowest - 0.5, highest + 0.5)

    # Darker rows for the black keys, a line at every C: a keyboard to read the roll by.
    for pitch in range(lowest, highest + 1):
        if pitch % 12 in BLACK_KEYS:
            ax.axhspan(pitch - 0.5, pitch + 0.5, color=BLACK_KEY_ROW, lw=0, zorder=0)
    c_notes = [p for p in range(lowest, highest + 1) if p % 12 == 0]
    for pitch in c_notes:
        ax.axhline(pitch - 0.5, color=GRID, lw=0.8, zorder=1)
    ax.set_yticks(c_notes or [lowest + PITCH_MARGIN, highest - PITCH_MARGIN])
    ax.set_yticklabels([pitch_name(p) for p in (c_notes or [lowest + PITCH_MARGIN, highest - PITCH_MARGIN])])
    ax.grid(axis="x", color=GRID, lw=0.6, zorder=1)

    velocity = np.clip((np.array([n.velocity for n in notes], dtype=float) - SOFT) / (LOUD - SOFT), 0.0, 1.0)
    colours = NOTE_COLOURS(velocity)
    colours[:, 3] = 0.6 + 0.4 * velocity
    min_width = x_end / (ax.get_position().width * width_px) * 2  # at least 2 px wide
    ax.add_collection(
        PolyCollection(_note_polygons(notes, min_width), facecolors=colours, edgecolors=PANEL, linewidths=0.5, zorder=2)
    )

    ax.set_xlabel("seconds", color=TEXT)
    ax.tick_params(colors=TEXT, length=0, pad=6)
    ax.set_axisbelow(True)
    for spine in ax.spines.values():
        spine.set_visible(False)
    if title:
        fig.text(0.07, 0.925, title, color="#eef0f4", fontsize=18, fontweight="bold", va="center")
    return fig


def pianoroll_png(notes: Sequence[Note], title: str | None = None, size: tuple[int, int] = (1280, 720)) -> bytes:
    """The piano roll as PNG bytes of exactly ``size`` pixels."""
    buffer = io.BytesIO()
    draw_pianoroll(notes, title, size).savefig(buffer, format="png", facecolor=BACKGROUND)
    return buffer.getvalue()


def render_pianoroll(
    notes: Sequence[Note], out_path: str | Path, title: str | None = None, size: tuple[int, int] = (1280, 720)
) -> Path:
    """Write the piano roll as a PNG of exactly ``size`` pixels, atomically."""
    out_path = Path(out_path)
    part = out_path.with_name(f".{out_path.name}.{uuid.uuid4().hex[:8]}.part")
    try:
        part.write_bytes(pianoroll_png(notes, title, size))
        os.replace(part, out_path)
    finally:
        part.unlink(missing_ok=True)
    return out_path
