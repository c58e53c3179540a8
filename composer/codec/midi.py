"""MIDI files <-> notes, the way Magenta's note_seq reads them.

Reading: every track is parsed with pretty_midi (tempo changes included), each
non-drum track's sustain pedal (CC64 >= 64) lengthens that track's own notes, and all
non-drum tracks are merged into one piano part. Writing: one acoustic grand piano track.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from pathlib import Path

import pretty_midi

from composer.codec.events import Note

SUSTAIN_CC = 64
MIDI_SUFFIXES = (".mid", ".midi")

# note_seq sorts simultaneous events in this order before applying the pedal.
_SUSTAIN_ON, _SUSTAIN_OFF, _NOTE_ON, _NOTE_OFF = range(4)


class MidiError(ValueError):
    """A MIDI file that cannot be read."""


def read_midi(source: str | Path | bytes, max_ticks: int | None = None) -> pretty_midi.PrettyMIDI:
    """Parse a MIDI file (path or bytes), turning every parser failure into MidiError.

    ``max_ticks`` refuses a file whose last event lies beyond that tick before pretty_midi
    builds its tick-to-time table (one float per tick: a few bytes of file can ask for 80 MB).
    """
    name = "<bytes>" if isinstance(source, bytes) else str(source)
    try:  # here, not at the top: the GPU run imports this module where only a stand-in pretty_midi is
        import mido
    except ImportError as exc:
        raise MidiError(f"{name}: MIDI files cannot be read on this machine ({exc})") from None
    try:
        with warnings.catch_warnings():
            # pretty_midi warns about odd but legal files (tempo events off track 0).
            warnings.simplefilter("ignore")
            if isinstance(source, bytes):
                parsed = mido.MidiFile(file=io.BytesIO(source), charset="latin1")
            else:
                parsed = mido.MidiFile(filename=str(source), charset="latin1")
    except FileNotFoundError:
        raise MidiError(f"{name}: no such file") from None
    except Exception as exc:  # mido raises many kinds on bad bytes
        raise MidiError(f"{name}: not a readable MIDI file ({type(exc).__name__}: {exc})") from None
    last_tick = max((sum(message.time for message in track) for track in parsed.tracks), default=0)
    if max_ticks is not None and last_tick > max_ticks:
        raise MidiError(f"{name}: its last event is at tick {last_tick}, beyond {max_ticks}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return pretty_midi.PrettyMIDI(mido_object=parsed)
    except Exception as exc:  # pretty_midi refuses odd files in many ways
        raise MidiError(f"{name}: not a readable MIDI file ({type(exc).__name__}: {exc})") from None


def _apply_sustain(notes: list[list], pedal: list[tuple[float, bool]]) -> tuple[list[list], list[list]]:
    """Lengthen one track's notes under its sustain pedal, as note_seq does.

    ``notes`` are mutable [pitch, velocity, start, end] lists in the track's order.
    A held note sounds until the pedal lifts or the same pitch is struck again.
    Returns the notes kept and those the pedal still holds when the track ends.
    """
    events: list[tuple[float, int, object]] = []
    events.extend((n[2], _NOTE_ON, n) for n in notes)
    events.extend((n[3], _NOTE_OFF, n) for n in notes)
    events.extend((t, _SUSTAIN_ON if down else _SUSTAIN_OFF, None) for t, down in pedal)
    events.sort(key=lambda e: (e[0], e[1]))  # stable, like note_seq's itemgetter(0, 1)

    active: list[list] = []
    removed: set[int] = set()
    sustain = False
    time = 0.0
    for time, kind, note in events:
        if kind == _SUSTAIN_ON:
            sustain = True
        elif kind == _SUSTAIN_OFF:
            sustain = False
            still = []
            for n in active:
                if n[3] < time:
                    n[3] = time
                else:
                    still.append(n)
            active = still
        elif kind == _NOTE_ON:
            if sustain:
                still = []
                for n in active:
                    if n[0] == note[0]:
                        n[3] = time
                        if n[2] == n[3]:
                            removed.add(id(n))
                    else:
                        still.append(n)
                active = still
            active.append(note)
        elif not sustain:
            # Only a note that was not already cut by a re-strike is still listed.
            for i, n in enumerate(active):
                if n is note:
                    del active[i]
                    break
    return [n for n in notes if id(n) not in removed], active


def notes_from_midi(midi: pretty_midi.PrettyMIDI) -> list[Note]:
    """All non-drum notes of a parsed file, pedal applied per track, merged in track order."""
    tracks: list[list[list]] = []
    held: list[list] = []
    last_time = 0.0  # note_seq ends pedal-held notes at the file's last note or pedal event
    for instrument in midi.instruments:
        pedal = [(cc.time, cc.value >= 64) for cc in instrument.control_changes if cc.number == SUSTAIN_CC]
        last_time = max([last_time] + [t for t, _ in pedal])
        if instrument.is_drum:
            continue
        notes = [[n.pitch, n.velocity, n.start, n.end] for n in instrument.notes]
        last_time = max([last_time] + [n[3] for n in notes])
        if pedal:
            notes, still_held = _apply_sustain(notes, pedal)
            held.extend(still_held)
        tracks.append(notes)
    for n in held:
        n[3] = last_time
    return [Note(int(p), int(v), float(s), float(e)) for notes in tracks for p, v, s, e in notes]


def load_notes(source: str | Path | bytes, max_ticks: int | None = None) -> list[Note]:
    """Read a MIDI file into merged piano notes. Raises MidiError on unreadable input (and on
    a last event beyond ``max_ticks``)."""
    return notes_from_midi(read_midi(source, max_ticks))


def notes_to_midi(notes: Sequence[Note], program: int = 0) -> pretty_midi.PrettyMIDI:
    """One piano track holding ``notes``."""
    midi = pretty_midi.PrettyMIDI(resolution=480, initial_tempo=120.0)
    piano = pretty_midi.Instrument(program=program, name="Piano")
    piano.notes = [
        pretty_midi.Note(velocity=n.velocity, pitch=n.pitch, start=n.start, end=n.end)
        for n in sorted(notes, key=lambda n: (n.start, n.pitch))
    ]
    midi.instruments.append(piano)
    return midi


def save_notes(notes: Sequence[Note], path: str | Path, program: int = 0) -> None:
    """Write notes as a MIDI file, atomically (a crash leaves no half-written file)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    notes_to_midi(notes, program).write(str(tmp))
    tmp.replace(path)


def midi_bytes(notes: Sequence[Note], program: int = 0) -> bytes:
    """The MIDI file for ``notes`` as bytes (for HTTP responses and archives)."""
    buffer = io.BytesIO()
    notes_to_midi(notes, program).write(buffer)
    return buffer.getvalue()


def find_midi_files(root: str | Path) -> list[Path]:
    """Every .mid/.midi file under ``root``, recursively, in a stable order."""
    root = Path(root)
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in MIDI_SUFFIXES and p.is_file())


def midi_duration(notes: Sequence[Note]) -> float:
    """Seconds from the start to the last note's end."""
    return max((n.end for n in notes), default=0.0)
