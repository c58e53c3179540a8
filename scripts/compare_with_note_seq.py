"""One-off check: does our event codec agree with Magenta's note_seq, event for event?

For a deterministic sample of MIDI files per corpus it builds Magenta's Performance
(``midi_file_to_note_sequence`` -> ``apply_sustain_control_changes`` -> drop drum notes ->
``quantize_note_sequence_absolute(100)`` -> ``Performance(num_velocity_bins=32,
max_shift_steps=100)``), maps each event to our token id and compares it with
``composer.codec.events.encode(composer.codec.midi.load_notes(path))``.

note-seq is NOT a project dependency. Install it in a separate virtualenv together with
what our codec imports, then run this script with that interpreter, e.g.:

    python3 -m venv /tmp/nsvenv && /tmp/nsvenv/bin/pip install note-seq pretty_midi mido numpy
    /tmp/nsvenv/bin/python scripts/compare_with_note_seq.py --per-corpus 50

Exit status: 0 when every compared file agrees, 1 otherwise.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from composer.codec import events as ev  # noqa: E402
from composer.codec.midi import find_midi_files, load_notes  # noqa: E402

DEFAULT_DIRS = [Path("/work/shared/data") / name for name in ("asap", "pop909", "nottingham")]
STEPS_PER_SECOND = 100


def _import_note_seq():
    """note_seq's submodules; its package import drags in librosa & co, which only warn."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            from note_seq import midi_io, music_pb2, performance_lib, sequences_lib
        except ImportError as exc:
            sys.exit(f"note_seq is not importable ({exc}); run this with a python that has note-seq installed")
    return midi_io, music_pb2, performance_lib, sequences_lib


midi_io, music_pb2, performance_lib, sequences_lib = _import_note_seq()
PerformanceEvent = performance_lib.PerformanceEvent
_OFFSETS = {
    PerformanceEvent.NOTE_ON: ev.NOTE_ON,
    PerformanceEvent.NOTE_OFF: ev.NOTE_OFF,
    PerformanceEvent.TIME_SHIFT: ev.TIME_SHIFT - 1,
    PerformanceEvent.VELOCITY: ev.VELOCITY - 1,
}


def magenta_tokens(path: Path) -> list[int]:
    """Magenta's performance_with_dynamics events for one file, as our token ids."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sequence = midi_io.midi_file_to_note_sequence(str(path))
    sequence = sequences_lib.apply_sustain_control_changes(sequence)
    piano = music_pb2.NoteSequence()
    piano.CopyFrom(sequence)
    del piano.notes[:]
    piano.notes.extend(note for note in sequence.notes if not note.is_drum)
    quantized = sequences_lib.quantize_note_sequence_absolute(piano, STEPS_PER_SECOND)
    performance = performance_lib.Performance(
        quantized,
        start_step=0,
        num_velocity_bins=ev.NUM_VELOCITY_BINS,
        max_shift_steps=ev.MAX_SHIFT_STEPS,
    )
    return [_OFFSETS[event.event_type] + event.event_value for event in performance]


def our_tokens(path: Path) -> list[int]:
    return [int(t) for t in ev.encode(load_notes(path))]


def sample(files: list[Path], count: int) -> list[Path]:
    """Every k-th file of the sorted list, at most ``count`` of them (0: all)."""
    if count <= 0 or count >= len(files):
        return files
    return files[:: len(files) // count][:count]


def first_difference(a: list[int], b: list[int]) -> int:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return min(len(a), len(b))


def show(tokens: list[int], index: int, context: int) -> str:
    lo = max(0, index - context)
    parts = [("*" if i == index else "") + ev.describe(t) for i, t in enumerate(tokens[lo : index + context + 1], lo)]
    return " ".join(parts) if parts else "(end)"


def compare_corpus(directory: Path, per_corpus: int, context: int, max_shown: int) -> tuple[int, int]:
    files = sample(find_midi_files(directory), per_corpus)
    identical = total_events = shown = 0
    failures: list[str] = []
    started = time.monotonic()
    for path in files:
        name = path.relative_to(directory)
        try:
            theirs = magenta_tokens(path)
        except Exception as exc:  # note_seq raises many kinds on odd files
            failures.append(f"  {name}: note_seq failed: {type(exc).__name__}: {exc}")
            continue
        try:
            ours = our_tokens(path)
        except Exception as exc:
            failures.append(f"  {name}: composer failed: {type(exc).__name__}: {exc}")
            continue
        total_events += len(theirs)
        if ours == theirs:
            identical += 1
            continue
        index = first_difference(ours, theirs)
        if shown < max_shown:
            shown += 1
            failures.append(
                f"  {name}: first difference at event {index} (ours {len(ours)}, note_seq {len(theirs)} events)\n"
                f"    ours:     {show(ours, index, context)}\n"
                f"    note_seq: {show(theirs, index, context)}"
            )
        else:
            failures.append(f"  {name}: first difference at event {index}")
    print(
        f"{directory.name}: {len(files)} files compared, {identical} identical, "
        f"{total_events} note_seq events ({time.monotonic() - started:.1f} s)"
    )
    for line in failures:
        print(line)
    return len(files), identical


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dirs", nargs="*", type=Path, default=DEFAULT_DIRS, help="corpus directories")
    parser.add_argument("--per-corpus", type=int, default=50, help="files per corpus, every k-th sorted (0: all)")
    parser.add_argument("--context", type=int, default=4, help="events shown either side of a difference")
    parser.add_argument("--max-shown", type=int, default=10, help="mismatches shown in detail per corpus")
    args = parser.parse_args()

    compared = agreed = 0
    for directory in args.dirs:
        n, ok = compare_corpus(directory, args.per_corpus, args.context, args.max_shown)
        compared += n
        agreed += ok
    print(f"total: {agreed}/{compared} files identical")
    return 0 if agreed == compared else 1


if __name__ == "__main__":
    sys.exit(main())
