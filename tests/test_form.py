"""Form plans: sections that come back (composer.sampling.sample), chosen per genre or per request."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from composer.analysis.structure import measure_pieces, summarize
from composer.codec import events
from composer.codec.events import Note
from composer.contract import FREE_FORM, CompositionRejected
from composer.sampling.sample import Sampler, SampleRequest, form_plan, piece_notes
from composer.serving.composition import genre_style, piece_form
from tests.conftest import write_manifest


def _steps_at(tokens: list[int]) -> np.ndarray:
    """The time, in steps, at each token of a stream (its own time shift included)."""
    return np.cumsum([t - events.TIME_SHIFT + 1 if events.TIME_SHIFT <= t < events.VELOCITY else 0 for t in tokens])


def test_a_plan_cuts_the_piece_into_equal_sections_and_names_what_each_restates():
    plan = form_plan("ABAB", 30.0)
    assert [s.end_step for s in plan] == [750, 1500, 2250, 3000]
    assert [s.restates for s in plan] == [None, None, 0, 1]
    assert [s.restates for s in form_plan("AABA", 8.0)] == [None, 0, None, 0]


def test_a_restated_section_begins_as_its_first_appearance_did(tiny_model_dir: Path):
    sampler = Sampler.from_dir(tiny_model_dir, "cpu", "fused")
    tokens = sampler.generate([SampleRequest(8.0, seed=3, form="ABAB")])[0].tolist()
    times = _steps_at(tokens)
    first = [t for t, at in zip(tokens, times) if at < 150]
    third = [t for t, at in zip(tokens, times) if 400 <= at < 550]
    notes = lambda part: [t for t in part if t < events.NOTE_OFF]  # noqa: E731
    assert len(notes(first)) >= 3 and notes(third)[: len(notes(first)) // 2] == notes(first)[: len(notes(first)) // 2]


def test_a_planned_piece_replays_alone_or_in_a_batch_and_its_themes_recur(tiny_model_dir: Path):
    sampler = Sampler.from_dir(tiny_model_dir, "cpu", "fused")
    planned = SampleRequest(30.0, seed=1, form="ABAB")
    alone = sampler.generate([planned])[0]
    batch = sampler.generate([SampleRequest(10.0, seed=2), planned, SampleRequest(30.0, seed=1)])
    assert np.array_equal(batch[1], alone)
    measured = {
        name: summarize(measure_pieces([(piece_notes(t), events.duration_steps(t) / 100)]))
        for name, t in (("planned", alone), ("free", batch[2]))
    }
    assert measured["planned"]["recurrence"] > measured["free"]["recurrence"] + 0.2


def test_the_form_comes_from_the_request_or_the_genres_manifest(tmp_path: Path):
    genres = tmp_path / "genres"
    genres.mkdir()
    write_manifest(genres, "reel", 'form = "AABB"\n')
    write_manifest(genres, "drone")
    reel, drone = genre_style("reel", genres), genre_style("drone", genres)
    assert piece_form(None, reel) == "AABB" and piece_form("ABAB", reel) == "ABAB"
    assert piece_form(FREE_FORM, reel) is None and piece_form(None, drone) is None
    assert piece_form(None, genre_style("models-only", genres)) is None
    with pytest.raises(CompositionRejected, match="form must be one of ABAB"):
        piece_form("ABCD", reel)
    write_manifest(genres, "bad", 'form = "ABC"\n')
    from composer.corpus.genres import load_genre

    with pytest.raises(ValueError, match="form must be one of"):
        load_genre("bad", genres)


def test_a_piece_is_moved_to_the_tonic_asked_within_the_pianos_keys():
    from composer.codec.keys import estimate_key
    from composer.serving.composition import fit_to_key

    g_major = [60 + step for step in (7, 9, 11, 12, 14, 16, 18, 19)]  # G major, G4..G5
    tokens = events.encode([Note(p, 80, i * 0.3, i * 0.3 + 0.25) for i, p in enumerate(g_major * 3)])
    moved = fit_to_key(tokens, "E flat major")
    heard = estimate_key(piece_notes(moved))[0].name
    assert heard == "E♭ major" and events.pitch_range(moved)[0] == 63  # 4 down, not 8 up
    assert fit_to_key(tokens, None) is tokens
    high = events.encode([Note(p + 36, 80, i * 0.3, i * 0.3 + 0.25) for i, p in enumerate(g_major)])  # up to G8
    assert events.pitch_range(fit_to_key(high, "B major"))[1] <= 108  # down rather than past the top key


def test_a_tune_in_the_other_mode_is_recast_in_the_mode_asked_and_keeps_its_rhythm():
    from composer.codec.keys import estimate_key
    from composer.serving.composition import fit_to_key

    g_major = [60 + step for step in (7, 9, 11, 12, 14, 16, 18, 19)]
    tokens = events.encode([Note(p, 80, i * 0.3, i * 0.3 + 0.25) for i, p in enumerate(g_major * 3)])
    minor = fit_to_key(tokens, "E minor")
    assert estimate_key(piece_notes(minor))[0].name == "E minor"
    before, after = piece_notes(tokens), piece_notes(minor)
    assert [(n.start, n.end) for n in before] == [(n.start, n.end) for n in after]
    moved = {(b.pitch - a.pitch) for a, b in zip(before, after)}
    assert moved <= {-3, -4}  # every note moved down to E, the third and sixth one semitone further


def test_real_tunes_come_out_in_every_key_asked():
    """Nottingham tunes (major and minor) asked for each of the 24 keys: the key their notes are
    in afterwards (Krumhansl-Kessler) is the one asked."""
    from conftest import DATA_ROOT

    from composer.codec.keys import ALL_KEYS, estimate_key
    from composer.codec.midi import load_notes
    from composer.serving.composition import fit_to_key

    files = sorted((DATA_ROOT / "nottingham").glob("*.mid"))[::97][:6]
    if not files:
        pytest.skip("the Nottingham corpus is not beside the repository")
    heard = []
    for path in files:
        tokens = events.encode(load_notes(path))
        for key in ALL_KEYS:
            found = estimate_key(piece_notes(fit_to_key(tokens, key.name)))
            heard.append(found is not None and found[0] == key)
    assert np.mean(heard) >= 0.95, f"{np.mean(heard):.0%} in the key asked"


def test_a_genre_that_repeats_less_replays_only_the_opening_of_a_restated_section(tiny_model_dir: Path):
    """restate = 0.3: the third section of ABAB begins as the first did for 30 % of its length, then
    goes its own way (the tiny model's samples share nothing by chance over a whole section)."""
    sampler = Sampler.from_dir(tiny_model_dir, "cpu", "fused")

    def replayed(restate: float) -> int:
        tokens = sampler.generate([SampleRequest(8.0, seed=3, form="ABAB", restate=restate)])[0].tolist()
        times = _steps_at(tokens)
        first = [t for t, at in zip(tokens, times) if at < 200 and t < events.NOTE_OFF]
        third = [t for t, at in zip(tokens, times) if 400 <= at < 600 and t < events.NOTE_OFF]
        return next((i for i, (a, b) in enumerate(zip(first, third)) if a != b), min(len(first), len(third)))

    short, long = replayed(0.3), replayed(0.75)
    assert 0 < short < long


def test_the_share_restated_comes_from_the_genres_manifest(tmp_path: Path):
    from composer.corpus.genres import load_genre
    from composer.sampling.sample import RESTATED

    genres = tmp_path / "genres"
    genres.mkdir()
    write_manifest(genres, "ballad", 'form = "AABB"\nrestate = 0.3\n')
    write_manifest(genres, "reel", 'form = "AABB"\n')
    assert genre_style("ballad", genres).restate == 0.3 and genre_style("reel", genres).restate == RESTATED
    assert genre_style("models-only", genres).restate == RESTATED
    for bad in ("0", "1.5", "true", '"half"'):
        write_manifest(genres, "bad", f"restate = {bad}\n")
        with pytest.raises(ValueError, match="restate"):
            load_genre("bad", genres)
    with pytest.raises(ValueError, match="restate must be in"):
        from composer.sampling.sample import validate

        validate(SampleRequest(8.0, seed=1, form="AA", restate=0.0))


def test_a_genre_names_what_its_real_music_measures_and_bad_values_are_refused(tmp_path: Path):
    from composer.corpus.genres import load_genre

    genres = tmp_path / "genres"
    genres.mkdir()
    write_manifest(genres, "ballad", "[structure]\nrecurrence = 0.2\nloopiness = 0.15\n")
    write_manifest(genres, "reel")
    assert genre_style("ballad", genres).profile == {"recurrence": 0.2, "loopiness": 0.15}
    assert genre_style("reel", genres).profile == {} and genre_style("models-only", genres).profile == {}
    for bad in ("recurrence = 0", "recurrence = 1.5", "tempo = 0.5", 'loopiness = "low"', "recurrence = true"):
        write_manifest(genres, "bad", f"[structure]\n{bad}\n")
        with pytest.raises(ValueError, match="structure"):
            load_genre("bad", genres)
    for name in ("folk", "pop", "chorale"):  # classical has none: measured, it did worse with one
        assert set(load_genre(name).structure) == {"key_steadiness", "recurrence", "loopiness"}


def test_of_equally_likely_candidates_the_one_that_measures_like_the_genre_is_kept():
    """Two real tunes, equally likely: whichever one the profile describes is the one kept."""
    from conftest import DATA_ROOT

    from composer.analysis.musicality import ranked_candidates
    from composer.analysis.structure import measure_window
    from composer.codec.midi import load_notes

    files = sorted((DATA_ROOT / "nottingham").glob("*.mid"))
    if not files:
        pytest.skip("the Nottingham corpus is not beside the repository")
    tunes = []
    for path in files[::40]:
        notes = [n for n in load_notes(path) if n.start < 30.0]
        measured = measure_window(notes)
        if measured is not None:
            tunes.append((notes, measured))
    (a, ma), (b, mb) = max(
        ((x, y) for i, x in enumerate(tunes) for y in tunes[i + 1 :]),
        key=lambda pair: (
            abs(pair[0][1].recurrence - pair[1][1].recurrence) + abs(pair[0][1].loopiness - pair[1][1].loopiness)
        ),
    )
    candidates = [(-1.0, a, 30.0), (-1.0, b, 30.0)]

    def like(m):
        return {
            "key_steadiness": max(m.key_steadiness, 0.05),
            "recurrence": max(m.recurrence, 0.05),
            "loopiness": max(m.loopiness, 0.05),
        }

    assert ranked_candidates(candidates, profile=like(ma))[0] == 0
    assert ranked_candidates(candidates, profile=like(mb))[0] == 1


def test_a_piece_asked_for_no_key_goes_to_one_of_the_genres_usual_keys_in_its_own_mode():
    from composer.codec.keys import estimate_key
    from composer.serving.composition import place_in_key, usual_key

    c_major = [60, 62, 64, 65, 67, 69, 71, 72]
    tokens = events.encode([Note(p, 80, i * 0.3, i * 0.3 + 0.25) for i, p in enumerate(c_major * 3)])
    keys = {"G major": 0.5, "D major": 0.3, "E minor": 0.2}
    drawn = {usual_key(tokens, keys, seed) for seed in range(40)}
    assert drawn == {"G major", "D major"}  # its own mode only, every usual one in time
    assert all(usual_key(tokens, keys, seed) == usual_key(tokens, keys, seed) for seed in range(10))  # a seed keeps it
    for seed in range(5):
        heard = estimate_key(piece_notes(place_in_key(tokens, None, keys, seed)))[0].name
        assert heard == usual_key(tokens, keys, seed)
    assert usual_key(tokens, {"E minor": 1.0}, 0) is None  # no usual key in its mode: it stays
    assert np.array_equal(place_in_key(tokens, None, {}, 0), tokens)
    assert estimate_key(piece_notes(place_in_key(tokens, "F minor", keys, 0)))[0].name == "F minor"  # asked wins


def test_the_usual_keys_come_from_the_genres_manifest_and_bad_ones_are_refused(tmp_path: Path):
    from composer.corpus.genres import load_genre

    genres = tmp_path / "genres"
    genres.mkdir()
    write_manifest(genres, "reel", '[keys]\n"G major" = 0.6\n"D" = 0.3\n"b minor" = 0.1\n')
    assert genre_style("reel", genres).keys == {"G major": 0.6, "D major": 0.3, "B minor": 0.1}
    assert genre_style("models-only", genres).keys == {}
    for bad in ('"H major" = 0.5', '"G major" = 0', '"G major" = "often"', '"G major" = 2'):
        write_manifest(genres, "bad", f"[keys]\n{bad}\n")
        with pytest.raises(ValueError, match="keys"):
            load_genre("bad", genres)
    assert max(load_genre("folk").keys, key=load_genre("folk").keys.get) == "G major"


def test_a_piece_with_too_few_notes_for_a_key_never_wins_on_the_genres_profile():
    """Far from the genre on every measure, a tune still beats a near-silent candidate (the bot
    was sent a 2 s piece too quiet to render when the profile outweighed the no-key penalty)."""
    from composer.analysis.musicality import ranked_candidates

    tune = [Note(60 + step, 80, i * 0.25, i * 0.25 + 0.2) for i, step in enumerate([0, 2, 4, 5, 7, 9, 11, 12] * 4)]
    sparse = [Note(60, 80, 0.0, 0.2), Note(62, 80, 1.0, 1.2)]
    profile = {"key_steadiness": 0.2, "recurrence": 0.05, "loopiness": 0.05}  # the tune is far off all three
    assert ranked_candidates([(-1.0, sparse, 8.0), (-1.0, tune, 8.0)], profile=profile)[0] == 1


def test_with_a_key_asked_the_best_candidate_heard_in_it_is_kept():
    from composer.codec.keys import estimate_key
    from composer.serving.composition import GenreStyle, keep_and_place

    c_major = [60, 62, 64, 65, 67, 69, 71, 72]
    tune = [Note(p, 80, i * 0.3, i * 0.3 + 0.25) for i, p in enumerate(c_major * 3)]
    # The likelier candidate spans C1 to C8, so no transposition on the keyboard can move it to D.
    wide = events.encode([*tune, Note(24, 60, 0.0, 7.0), Note(108, 60, 0.0, 7.0)])
    narrow = events.encode(tune)
    scored = [(wide, -0.5), (narrow, -2.0)]
    kept, tokens = keep_and_place(scored, "D major", 0, GenreStyle(), primed=False)
    assert kept == 1 and estimate_key(piece_notes(tokens))[0].name == "D major"
    kept, tokens = keep_and_place(scored, "C major", 0, GenreStyle(), primed=False)
    assert kept == 0  # the best is already in C
    kept, tokens = keep_and_place(scored[:1], "D major", 0, GenreStyle(), primed=False)
    assert kept == 0 and np.array_equal(tokens, wide)  # none can be: the best, as it is


def test_a_piece_holding_its_key_favours_the_notes_of_the_key_it_set_out_in():
    from composer.sampling.sample import KEY_HOLD_NOTES, Stream

    c_major = [60, 62, 64, 65, 67, 69, 71, 72]
    held, free = Stream(SampleRequest(8.0, seed=1, key_hold=2.0)), Stream(SampleRequest(8.0, seed=1))
    for stream in (held, free):
        stream.accept(events.VELOCITY + 20)
        for pitch in (c_major * 3)[:KEY_HOLD_NOTES]:
            stream.accept(events.NOTE_ON + pitch)
    assert free.note_bias is None and held.note_bias is not None
    bias = held.note_bias
    assert bias[60] > bias[67] > bias[61] and bias[48] == bias[60]  # tonic, fifth, then chromatic; any octave
    assert bias[60] - bias[61] == pytest.approx(2.0 * np.log(6.35 / 2.23), rel=1e-5)


def test_held_pieces_replay_alone_or_in_a_batch_and_keep_their_key_more_clearly(tiny_model_dir: Path):
    from composer.codec.keys import estimate_key

    sampler = Sampler.from_dir(tiny_model_dir, "cpu", "fused")
    held = [SampleRequest(30.0, seed=s, key_hold=4.0) for s in range(6)]
    alone = sampler.generate(held[2:3])[0]
    pieces = sampler.generate(held + [SampleRequest(30.0, seed=s) for s in range(6)])
    assert np.array_equal(pieces[2], alone)
    clarity = [estimate_key(piece_notes(t))[1] for t in pieces]
    assert np.mean(clarity[:6]) > np.mean(clarity[6:]) + 0.15
    # the bias moves probability between pitches, not between notes and other events: as busy
    notes = [sum(int(x) < events.NOTE_OFF for x in t) / (events.duration_steps(t) / 100) for t in pieces]
    assert np.mean(notes[:6]) == pytest.approx(np.mean(notes[6:]), rel=0.1)
    from composer.sampling.sample import validate

    with pytest.raises(ValueError, match="key_hold must be in"):
        validate(SampleRequest(8.0, seed=1, key_hold=-1.0))


def test_key_hold_comes_from_the_genres_manifest_and_bad_values_are_refused(tmp_path: Path):
    from composer.corpus.genres import load_genre

    genres = tmp_path / "genres"
    genres.mkdir()
    write_manifest(genres, "reel", "key_hold = 1.5\n")
    assert genre_style("reel", genres).key_hold == 1.5 and genre_style("models-only", genres).key_hold == 0.0
    for bad in ("-1", "6", "true", '"firm"'):
        write_manifest(genres, "bad", f"key_hold = {bad}\n")
        with pytest.raises(ValueError, match="key_hold"):
            load_genre("bad", genres)


def test_a_broken_manifest_composes_plainly_and_says_why_once(tmp_path: Path, caplog):
    genres = tmp_path / "genres"
    genres.mkdir()
    write_manifest(genres, "reel", "key_hold = 9\n")
    with caplog.at_level("WARNING", logger="composer.serving.composition"):
        assert genre_style("reel", genres) == genre_style("models-only", genres)
        genre_style("reel", genres)
    warned = [r.getMessage() for r in caplog.records if "without its manifest" in r.getMessage()]
    assert len(warned) == 1 and "key_hold" in warned[0]


def _note_ons_with_times(tokens: list[int]) -> list[tuple[int, int]]:
    """(pitch, step) of each note-on of a token stream."""
    return [(t, int(at)) for t, at in zip(tokens, _steps_at(tokens)) if t < events.NOTE_OFF]


def test_each_new_phrase_is_played_twice_alone_or_in_a_batch(tiny_model_dir: Path):
    """echo = 1 s: the first second's notes come again at once, in order and in rhythm, then a
    new phrase begins; the same seed gives the same piece alone or beside others."""
    sampler = Sampler.from_dir(tiny_model_dir, "cpu", "fused")
    echoed = SampleRequest(8.0, seed=3, echo=1.0)
    alone = sampler.generate([echoed])[0]
    batch = sampler.generate([SampleRequest(4.0, seed=2), echoed, SampleRequest(8.0, seed=3)])
    assert np.array_equal(batch[1], alone)
    notes = _note_ons_with_times(alone.tolist())
    phrase = [(p, at) for p, at in notes if at < 100]
    echo = notes[len(phrase) : 2 * len(phrase)]
    assert len(phrase) >= 3 and [p for p, _ in echo] == [p for p, _ in phrase]
    offset = echo[0][1] - phrase[0][1]
    assert offset >= 100 and [at - offset for _, at in echo] == [at for _, at in phrase]
    pieces = sampler.generate([SampleRequest(30.0, seed=1, echo=3.0), SampleRequest(30.0, seed=1)])
    measured = [summarize(measure_pieces([(piece_notes(t), events.duration_steps(t) / 100)])) for t in pieces]
    assert measured[0]["recurrence"] > measured[1]["recurrence"] + 0.2, measured


def test_a_restated_section_replays_its_source_echoes_included(tiny_model_dir: Path):
    """AA with echo: the first section goes in phrases played twice; the second restates the first
    (restate 1: all of it), so it holds the same notes in the same order, echoes included."""
    sampler = Sampler.from_dir(tiny_model_dir, "cpu", "fused")
    tokens = sampler.generate([SampleRequest(12.0, seed=5, form="AA", restate=1.0, echo=1.5)])[0].tolist()
    notes = _note_ons_with_times(tokens)
    first = [p for p, at in notes if at < 600]
    second = [p for p, at in notes if at >= 600]
    assert len(first) >= 6 and second[: len(first) - 2] == first[: len(first) - 2]


def test_echo_comes_from_the_genres_manifest_and_bad_values_are_refused(tmp_path: Path):
    from composer.corpus.genres import load_genre
    from composer.sampling.sample import validate
    from composer.serving.composition import sample_request

    genres = tmp_path / "genres"
    genres.mkdir()
    write_manifest(genres, "ballad", "echo = 1.5\necho_gap = 6\n")
    style = genre_style("ballad", genres)
    assert (style.echo, style.echo_gap) == (1.5, 6.0) and genre_style("models-only", genres).echo == 0.0
    request = sample_request(30.0, 1.0, 1.0, 7, style=style)
    assert (request.echo, request.echo_gap) == (1.5, 6.0)
    assert sample_request(30.0, 1.0, 1.0, 7).echo == 0.0
    for option, bad in [("echo", "-1"), ("echo", "11"), ("echo", "true"), ("echo", '"short"'), ("echo_gap", "-2")]:
        write_manifest(genres, "bad", f"{option} = {bad}\n")
        with pytest.raises(ValueError, match=option):
            load_genre("bad", genres)
    for bad in (-0.5, 10.5):
        with pytest.raises(ValueError, match="echo must be in"):
            validate(SampleRequest(8.0, seed=1, echo=bad))
    with pytest.raises(ValueError, match="echo_gap must be in"):
        validate(SampleRequest(8.0, seed=1, echo=1.0, echo_gap=-1.0))


def test_after_an_echo_the_model_goes_its_own_way_for_the_gap(tiny_model_dir: Path):
    """echo 0.5 s: phrase after phrase without a gap (an echo can begin within 2 s of the last,
    sooner where the model's time shifts allow); with a 4 s gap, each echo begins at least 5 s
    (phrase, echo, gap) after the one before."""
    from composer.sampling.sample import BatchSampler

    sampler = Sampler.from_dir(tiny_model_dir, "cpu", "fused")
    batch = BatchSampler(sampler)
    streams = [batch.add(SampleRequest(20.0, seed=4, echo=0.5, echo_gap=gap)) for gap in (0.0, 4.0)]
    echo_starts: list[list[int]] = [[], []]
    echoing = [False, False]
    while batch.active:
        batch.step()
        for i, stream in enumerate(streams):
            if stream._echoing and not echoing[i]:
                echo_starts[i].append(stream.elapsed_steps)
            echoing[i] = stream._echoing
    close, spaced = (np.diff(starts) for starts in echo_starts)
    assert len(echo_starts[0]) >= 6 and close.min() < 200, echo_starts
    assert 2 <= len(echo_starts[1]) <= 4 and spaced.min() >= 500, echo_starts


def test_a_genre_s_own_pace_is_asked_of_its_model_when_the_listener_asks_none(tmp_path: Path):
    """Pop v6 served without a density control played 8.1 notes a second against real pop's 5.5;
    asked for its genre's pace it plays 5.7. The listener's own ask still wins, and a pace the
    genre set is no request: the piece does not say it followed one."""
    from composer.codec import controls
    from composer.corpus.genres import load_genre
    from composer.serving.composition import assemble, sample_request

    genres = tmp_path / "genres"
    write_manifest(genres, "ballad", "density = 5.5\n")
    write_manifest(genres, "reel")
    style, plain = genre_style("ballad", genres), genre_style("reel", genres)
    assert style.density == 5.5 and plain.density is None and genre_style("models-only", genres).density is None

    def bin_of(request: SampleRequest) -> int:
        return int(np.argmax(request.controls[controls.DENSITY]))

    own = sample_request(10.0, 1.0, 0.95, 7, style=style)
    assert own.controls[controls.NO_KEY] == 1 and own.controls[controls.NO_DENSITY] == 0
    assert bin_of(own) == int(controls.density_bin(5.5))
    asked = sample_request(10.0, 1.0, 0.95, 7, density=20.0, style=style)
    assert bin_of(asked) == int(controls.density_bin(20.0)) != bin_of(own)
    assert sample_request(10.0, 1.0, 0.95, 7, style=plain).controls is None
    assert sample_request(10.0, 1.0, 0.95, 7).controls is None

    tokens = events.encode([Note(60, 80, 0.0, 0.5), Note(64, 80, 0.5, 1.0)])
    assert not assemble("ballad", "v1", own, tokens, controlled=True).controlled
    assert assemble("ballad", "v1", asked, tokens, density=20.0, controlled=True).controlled

    for bad in ("0", "-2", "1000", '"busy"', "true"):
        write_manifest(genres, "bad", f"density = {bad}\n")
        with pytest.raises(ValueError, match="density"):
            load_genre("bad", genres)
