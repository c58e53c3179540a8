"""Reading MIDI files the way note_seq does: pedal, tracks, drums, tempo, bad files."""

from __future__ import annotations

from pathlib import Path

import mido
import pytest

from composer.codec import events
from composer.codec.midi import MidiError, find_midi_files, load_notes, save_notes
from tests.conftest import DATA_ROOT, make_midi, needs_corpora


def spans(notes):
    return sorted((n.pitch, round(n.start, 4), round(n.end, 4)) for n in notes)


def test_plain_notes(tmp_path: Path):
    path = make_midi(tmp_path / "a.mid", [{"notes": [(60, 90, 0.0, 0.5), (64, 70, 0.5, 1.0)]}])
    notes = load_notes(path)
    assert spans(notes) == [(60, 0.0, 0.5), (64, 0.5, 1.0)]
    assert sorted(n.velocity for n in notes) == [70, 90]


def test_pedal_holds_notes_until_it_lifts(tmp_path: Path):
    path = make_midi(
        tmp_path / "p.mid",
        [
            {
                "notes": [(60, 80, 0.0, 0.2), (64, 80, 0.1, 0.3)],
                "pedal": [(0.05, 127), (1.0, 0)],
            }
        ],
    )
    assert spans(load_notes(path)) == [(60, 0.0, 1.0), (64, 0.1, 1.0)]


def test_pedal_note_restruck_is_cut_at_the_new_onset(tmp_path: Path):
    path = make_midi(
        tmp_path / "r.mid",
        [
            {
                "notes": [(60, 80, 0.0, 0.2), (60, 80, 0.5, 0.6)],
                "pedal": [(0.0, 100), (2.0, 0)],
            }
        ],
    )
    assert spans(load_notes(path)) == [(60, 0.0, 0.5), (60, 0.5, 2.0)]


def test_key_held_past_pedal_release_keeps_its_own_end(tmp_path: Path):
    path = make_midi(
        tmp_path / "k.mid",
        [
            {
                "notes": [(60, 80, 0.0, 1.5)],
                "pedal": [(0.0, 127), (1.0, 0)],
            }
        ],
    )
    assert spans(load_notes(path)) == [(60, 0.0, 1.5)]


def test_pedal_still_down_at_the_end_holds_to_the_last_event(tmp_path: Path):
    path = make_midi(
        tmp_path / "e.mid",
        [
            {
                "notes": [(60, 80, 0.0, 0.2), (62, 80, 0.5, 0.9)],
                "pedal": [(0.1, 127)],
            }
        ],
    )
    assert spans(load_notes(path)) == [(60, 0.0, 0.9), (62, 0.5, 0.9)]


def test_pedal_applies_only_to_its_own_track_then_tracks_merge(tmp_path: Path):
    path = make_midi(
        tmp_path / "m.mid",
        [
            {"notes": [(60, 80, 0.0, 0.2)], "pedal": [(0.0, 127), (1.0, 0)]},
            {"program": 1, "notes": [(72, 80, 0.0, 0.2)]},
        ],
    )
    assert spans(load_notes(path)) == [(60, 0.0, 1.0), (72, 0.0, 0.2)]


def test_overlapping_same_pitch_from_two_tracks_are_both_kept(tmp_path: Path):
    path = make_midi(
        tmp_path / "o.mid",
        [
            {"notes": [(60, 80, 0.0, 1.0)]},
            {"program": 1, "notes": [(60, 60, 0.5, 0.8)]},
        ],
    )
    notes = load_notes(path)
    assert len(notes) == 2
    assert len(events.decode(events.encode(notes))) == 2


def test_drums_are_left_out(tmp_path: Path):
    path = make_midi(
        tmp_path / "d.mid",
        [
            {"notes": [(60, 80, 0.0, 0.5)]},
            {"drum": True, "notes": [(36, 100, 0.0, 0.1)]},
        ],
    )
    assert spans(load_notes(path)) == [(60, 0.0, 0.5)]


def test_zero_length_note_gets_one_step(tmp_path: Path):
    mid = mido.MidiFile(ticks_per_beat=480)  # 120 bpm: 480 ticks = 0.5 s
    track = mido.MidiTrack()
    mid.tracks.append(track)
    track.append(mido.Message("note_on", note=60, velocity=80, time=480))
    track.append(mido.Message("note_off", note=60, velocity=0, time=1))  # about 1 ms
    path = tmp_path / "z.mid"
    mid.save(path)
    notes = load_notes(path)
    assert events.quantize(notes[0].start) == events.quantize(notes[0].end) == 50
    decoded = events.decode(events.encode(notes))
    assert [(n.pitch, n.start, n.end) for n in decoded] == [(60, 0.5, 0.51)]


def test_tempo_changes_are_honoured(tmp_path: Path):
    # 480 ticks per beat: beat 1 at 120 bpm (0.5 s), then 60 bpm (1 s per beat).
    mid = mido.MidiFile(ticks_per_beat=480)
    track = mido.MidiTrack()
    mid.tracks.append(track)
    track.append(mido.MetaMessage("set_tempo", tempo=500_000, time=0))
    track.append(mido.Message("note_on", note=60, velocity=80, time=0))
    track.append(mido.Message("note_off", note=60, velocity=0, time=480))
    track.append(mido.MetaMessage("set_tempo", tempo=1_000_000, time=0))
    track.append(mido.Message("note_on", note=62, velocity=80, time=0))
    track.append(mido.Message("note_off", note=62, velocity=0, time=480))
    path = tmp_path / "t.mid"
    mid.save(path)
    assert spans(load_notes(path)) == [(60, 0.0, 0.5), (62, 0.5, 1.5)]


def test_empty_file_has_no_notes(tmp_path: Path):
    path = make_midi(tmp_path / "empty.mid", [])
    assert load_notes(path) == []
    assert events.encode([]).size == 0


@pytest.mark.parametrize("payload", [b"", b"not a midi file at all", b"MThd\x00\x00\x00\x06\x00\x01\x00\x02\x01"])
def test_corrupt_file_is_a_clear_error(tmp_path: Path, payload: bytes):
    path = tmp_path / "bad.mid"
    path.write_bytes(payload)
    with pytest.raises(MidiError, match=r"bad\.mid: not a readable MIDI file"):
        load_notes(path)


def test_missing_file_is_a_clear_error(tmp_path: Path):
    with pytest.raises(MidiError, match="no such file"):
        load_notes(tmp_path / "nope.mid")


def test_written_file_reads_back(tmp_path: Path):
    notes = events.decode(events.encode([events.Note(60, 81, 0.0, 0.5), events.Note(67, 33, 0.25, 1.0)]))
    save_notes(notes, tmp_path / "out.mid")
    assert spans(load_notes(tmp_path / "out.mid")) == spans(notes)


@needs_corpora
@pytest.mark.parametrize("corpus", ["asap", "pop909", "nottingham"])
def test_round_trip_keeps_99_percent_of_notes_on_real_files(corpus: str):
    paths = find_midi_files(DATA_ROOT / corpus)
    sample = paths[:: max(1, len(paths) // 8)][:8]
    total = kept = 0
    for path in sample:
        notes = load_notes(path)
        total += len(notes)
        kept += events.round_trip_kept(notes)
    assert total > 1000
    assert kept / total >= 0.99
