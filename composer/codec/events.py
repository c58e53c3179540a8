"""Performance RNN event vocabulary and the notes <-> tokens codec.

The first 388 token ids are Magenta's ``performance_with_dynamics`` events, in Magenta's
order, so our token streams agree with note_seq's event for event:

    0-127    NOTE_ON pitch
    128-255  NOTE_OFF pitch
    256-355  TIME_SHIFT of 1..100 steps of 10 ms
    356-387  VELOCITY bin 1..32, bin = (velocity - 1) // 4 + 1

Special tokens used only by the model (padding, start, end of piece) come after them.
This module knows nothing of MIDI files; ``composer.codec.midi`` turns files into ``Note``s.
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

STEPS_PER_SECOND = 100
NUM_PITCHES = 128
MAX_SHIFT_STEPS = 100
NUM_VELOCITY_BINS = 32

NOTE_ON = 0
NOTE_OFF = NOTE_ON + NUM_PITCHES
TIME_SHIFT = NOTE_OFF + NUM_PITCHES
VELOCITY = TIME_SHIFT + MAX_SHIFT_STEPS
NUM_EVENTS = VELOCITY + NUM_VELOCITY_BINS  # 388

PAD = NUM_EVENTS
BOS = NUM_EVENTS + 1
EOS = NUM_EVENTS + 2
VOCAB_SIZE = NUM_EVENTS + 3

TOKEN_DTYPE = np.int16


@dataclass(frozen=True, slots=True)
class Note:
    """One sounding note; times in seconds."""

    pitch: int
    velocity: int
    start: float
    end: float


def velocity_to_bin(velocity: int) -> int:
    """Magenta's velocity bin, 1..32."""
    return (min(max(int(velocity), 1), 127) - 1) * NUM_VELOCITY_BINS // 128 + 1


def bin_to_velocity(velocity_bin: int) -> int:
    """The lowest MIDI velocity of a bin, as Magenta decodes it."""
    return 1 + (velocity_bin - 1) * (128 // NUM_VELOCITY_BINS)


def quantize(seconds: float) -> int:
    """Seconds to the nearest 10 ms step (note_seq's quantize_to_step with cutoff 0.5)."""
    return int(seconds * STEPS_PER_SECOND + 0.5)


def encode(notes: Sequence[Note], stretch: float = 1.0) -> np.ndarray:
    """Notes to event tokens exactly as note_seq builds a Performance.

    ``stretch`` multiplies every time first (Magenta's time-stretch augmentation).
    Notes are ordered by (start time, pitch) before quantizing; within one step the
    note events follow that order, which puts every note-off before the step's
    note-ons. A note that rounds to zero length sounds for one step.
    """
    ordered = sorted(notes, key=lambda n: (n.start, n.pitch))
    steps: list[tuple[int, int, bool]] = []
    for idx, note in enumerate(ordered):
        if not 0 <= note.pitch < NUM_PITCHES:
            raise ValueError(f"pitch {note.pitch} outside 0..127")
        start = quantize(note.start * stretch)
        end = quantize(note.end * stretch)
        if start < 0 or end < 0:
            raise ValueError(f"negative note time at {note.start:.3f} s")
        if end <= start:
            end = start + 1
        steps.append((start, idx, False))
        steps.append((end, idx, True))
    steps.sort()

    tokens: list[int] = []
    current_step = 0
    current_bin = 0
    for step, idx, is_off in steps:
        if step > current_step:
            gap = step - current_step
            while gap > MAX_SHIFT_STEPS:
                tokens.append(TIME_SHIFT + MAX_SHIFT_STEPS - 1)
                gap -= MAX_SHIFT_STEPS
            tokens.append(TIME_SHIFT + gap - 1)
            current_step = step
        note = ordered[idx]
        if is_off:
            tokens.append(NOTE_OFF + note.pitch)
        else:
            velocity_bin = velocity_to_bin(note.velocity)
            if velocity_bin != current_bin:
                tokens.append(VELOCITY + velocity_bin - 1)
                current_bin = velocity_bin
            tokens.append(NOTE_ON + note.pitch)
    return np.asarray(tokens, dtype=TOKEN_DTYPE)


def decode(tokens: Iterable[int], max_note_steps: int | None = None, restrike: bool = False) -> list[Note]:
    """Event tokens to notes; tolerant of anything a model may emit.

    A note-off ends the earliest open note of its pitch (as Magenta does); a note-off
    with nothing open is ignored; special tokens are skipped. Every note ends: notes
    still open at the end stop at the final time, and a note that would last zero
    steps lasts one, so nothing hangs and nothing is lost. ``max_note_steps`` caps a
    note's length, as Magenta's generator does (5 s), for model output whose note-offs
    come late or never. ``restrike`` ends a sounding note when its key is struck again, as
    on a piano: model output that strikes a key twice and releases it once would
    otherwise leave one note hanging (encoded MIDI may hold such overlaps, so it is off).
    """
    open_notes: defaultdict[int, deque[tuple[int, int, int]]] = defaultdict(deque)
    found: list[tuple[int, int, int, int, int]] = []  # start, pitch, onset order, velocity, end
    step = 0
    velocity = bin_to_velocity(NUM_VELOCITY_BINS // 2)
    onsets = 0
    for token in tokens:
        token = int(token)
        if NOTE_ON <= token < NOTE_OFF:
            pitch = token - NOTE_ON
            if restrike:
                while open_notes[pitch]:
                    start, order, vel = open_notes[pitch].popleft()
                    if start < step:  # struck twice at one instant: one note
                        found.append((start, pitch, order, vel, step))
            open_notes[pitch].append((step, onsets, velocity))
            onsets += 1
        elif NOTE_OFF <= token < TIME_SHIFT:
            pitch = token - NOTE_OFF
            if open_notes[pitch]:
                start, order, vel = open_notes[pitch].popleft()
                found.append((start, pitch, order, vel, max(step, start + 1)))
        elif TIME_SHIFT <= token < VELOCITY:
            step += token - TIME_SHIFT + 1
        elif VELOCITY <= token < NUM_EVENTS:
            velocity = bin_to_velocity(token - VELOCITY + 1)
    for pitch, pending in open_notes.items():
        for start, order, vel in pending:
            found.append((start, pitch, order, vel, max(step, start + 1)))
    found.sort()  # (start, pitch, onset order): re-encoding gives the same stream back
    cap = max_note_steps or 0
    return [
        Note(pitch, vel, start / STEPS_PER_SECOND, (min(end, start + cap) if cap else end) / STEPS_PER_SECOND)
        for start, pitch, _, vel, end in found
    ]


def round_trip_kept(notes: Sequence[Note]) -> int:
    """How many notes survive encode -> decode with pitch, onset step and velocity bin intact."""
    from collections import Counter

    def key(n: Note) -> tuple[int, int, int]:
        return n.pitch, quantize(n.start), velocity_to_bin(n.velocity)

    before = Counter(map(key, notes))
    after = Counter(map(key, decode(encode(notes))))
    return sum((before & after).values())


def duration_steps(tokens: Iterable[int]) -> int:
    """Total length of a token stream in 10 ms steps (the sum of its time shifts)."""
    arr = np.asarray(tokens if isinstance(tokens, np.ndarray) else list(tokens))
    shifts = arr[(arr >= TIME_SHIFT) & (arr < VELOCITY)].astype(np.int64)
    return int((shifts - TIME_SHIFT + 1).sum())


def transpose(tokens: np.ndarray, semitones: int) -> np.ndarray:
    """Shift every note event by ``semitones``; the caller keeps pitches in range."""
    out = tokens.copy()
    if semitones:
        notes = out < TIME_SHIFT
        out[notes] += semitones
    return out


def map_pitches(tokens: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Every note event's pitch through ``table`` (128 pitches -> pitches), timing untouched."""
    out = tokens.copy()
    notes = out < TIME_SHIFT
    out[notes] = out[notes] - out[notes] % NUM_PITCHES + table[out[notes] % NUM_PITCHES]
    return out


def pitch_range(tokens: np.ndarray) -> tuple[int, int] | None:
    """Lowest and highest pitch in a stream, or None when it holds no note event."""
    notes = tokens[tokens < TIME_SHIFT] % NUM_PITCHES
    if notes.size == 0:
        return None
    return int(notes.min()), int(notes.max())


def describe(token: int) -> str:
    """A readable name for one token, for debugging and docs."""
    if NOTE_ON <= token < NOTE_OFF:
        return f"NOTE_ON({token - NOTE_ON})"
    if NOTE_OFF <= token < TIME_SHIFT:
        return f"NOTE_OFF({token - NOTE_OFF})"
    if TIME_SHIFT <= token < VELOCITY:
        return f"TIME_SHIFT({token - TIME_SHIFT + 1})"
    if VELOCITY <= token < NUM_EVENTS:
        return f"VELOCITY({token - VELOCITY + 1})"
    return {PAD: "PAD", BOS: "BOS", EOS: "EOS"}.get(token, f"UNKNOWN({token})")
