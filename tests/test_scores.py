"""A genre from a music21 corpus: scores performed into cached MIDI, manifests checked, aliases served."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from composer.codec import scores
from composer.codec.midi import load_notes
from composer.corpus.data import prepare_genre
from composer.corpus.genres import Genre, ScoreOptions, load_genre, load_genre_file
from composer.serving.catalog import genre_catalog
from tests.conftest import tiny_model

CHORALES = ("bwv269.mxl", "bwv347.mxl", "bwv153.1.mxl")


@pytest.fixture
def corpus(tmp_path: Path) -> tuple[Path, list[Path]]:
    """Three real chorales from music21's corpus, and a score that is not one."""
    root, files = scores.corpus_files("bach")
    assert root.is_dir() and len(files) > 300, "the chorales ship inside the music21 wheel"
    picked = [p for p in files if p.name in CHORALES]
    assert len(picked) == 3
    local = tmp_path / "m21" / "bach"
    local.mkdir(parents=True)
    for path in picked:
        shutil.copy(path, local / path.name)
    (local / "broken.mxl").write_bytes(b"PK\x03\x04 this is not a score")
    return tmp_path / "m21", sorted(local.iterdir())


OPTS = ScoreOptions(tempo_bpm=(60.0, 60.0), tempo="override", velocity=(70, 70), fermata=1.0)


def test_scores_become_cached_midi_and_a_broken_one_is_skipped(corpus, tmp_path: Path, caplog):
    root, files = corpus
    cache = tmp_path / "cache"
    with caplog.at_level(logging.WARNING):
        first = scores.materialize("bach", root, files, cache, OPTS, workers=1)
    assert first.converted == 3 and first.files == 3
    assert [name for name, _ in first.skipped] == ["music21:bach/bach/broken.mid"]
    assert "broken" in caplog.text
    made = sorted(first.folder.rglob("*.mid"))
    assert first.folder.is_relative_to(cache / "corpora" / "music21-bach")
    assert [p.name for p in made] == ["bwv153.1.mid", "bwv269.mid", "bwv347.mid"]
    notes = load_notes(made[1])
    assert len(notes) > 100 and {n.velocity for n in notes} == {70}
    assert len({n.start for n in notes if n.start < 1.0}) <= 2, "at 60 bpm a second holds one or two beats"
    assert min(n.pitch for n in notes) >= 12 and max(n.pitch for n in notes) <= 84  # bass to soprano
    stamps = {p: p.stat().st_mtime_ns for p in made}

    again = scores.materialize("bach", root, files, cache, OPTS, workers=1)
    assert again.converted == 0 and again.files == 3 and len(again.skipped) == 1
    assert {p: p.stat().st_mtime_ns for p in made} == stamps, "a second run rewrites nothing"

    slower = scores.materialize("bach", root, files, cache, ScoreOptions(**{**vars(OPTS), "tempo_bpm": (30.0, 30.0)}))
    assert slower.folder != first.folder and slower.converted == 3
    assert max(n.end for n in load_notes(slower.folder / "bach" / "bwv269.mid")) > 1.9 * max(n.end for n in notes)


def test_velocity_range_fermatas_and_bar_pedal(corpus, tmp_path: Path):
    root, files = corpus
    plain = scores.materialize("bach", root, files[1:2], tmp_path / "a", OPTS, workers=1)
    played = ScoreOptions(tempo_bpm=(60.0, 60.0), tempo="override", velocity=(50, 90), pedal="bar", fermata=2.0)
    styled = scores.materialize("bach", root, files[1:2], tmp_path / "b", played, workers=1)
    name = files[1].with_suffix(".mid").name
    before = load_notes(plain.folder / "bach" / name)
    after = load_notes(styled.folder / "bach" / name)
    assert len({n.velocity for n in after}) > 10 and all(50 <= n.velocity <= 90 for n in after)
    assert max(n.end for n in after) > max(n.end for n in before) + 2, "fermatas are held"
    import pretty_midi

    pedal = pretty_midi.PrettyMIDI(str(styled.folder / "bach" / name)).instruments[0].control_changes
    assert len([c for c in pedal if c.number == 64 and c.value >= 64]) > 5


def test_prepare_uses_a_music21_source_like_a_folder(corpus, tmp_path: Path, monkeypatch):
    root, files = corpus
    monkeypatch.setattr(scores, "corpus_files", lambda name: (root, files))
    spec = Genre("chorale", "", ("music21:bach",), "PD", scores=OPTS, validation_fraction=0.3)
    cache = tmp_path / "cache"
    report = prepare_genre(spec, tmp_path / "no-data-root", cache, workers=1, progress=False)
    assert report.rebuilt and sum(s.files for s in report.splits.values()) == 3
    assert sum(s.events for s in report.splits.values()) > 300
    assert [name for name, _ in report.skipped] == ["music21:bach/bach/broken.mid"]
    again = prepare_genre(spec, tmp_path / "no-data-root", cache, workers=1, progress=False)
    assert not again.rebuilt and again.encoded == 0 and len(again.skipped) == 1


def test_shipped_chorale_manifest():
    spec = load_genre("chorale")
    assert spec.sources == ("music21:bach",) and "bach" in spec.aliases
    assert spec.scores.tempo == "override" and spec.scores.fermata > 1 and "music21" in spec.license


MINIMAL = 'name = "x"\nsources = ["music21:bach"]\nlicense = "PD"\n'


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ('[scores]\ntempo_bpm = "fast"\n', "scores.tempo_bpm"),
        ("[scores]\ntempo_bpm = [90, 60]\n", "scores.tempo_bpm"),
        ("[scores]\nvelocity = 200\n", "scores.velocity"),
        ("[scores]\nvelocity = [60.5, 70]\n", "scores.velocity"),
        ('[scores]\npedal = "always"\n', "scores.pedal"),
        ('[scores]\ntempo = "maybe"\n', "scores.tempo"),
        ("[scores]\nfermata = 9\n", "scores.fermata"),
        ("[scores]\ntempo_bmp = 80\n", "scores.tempo_bmp"),
        ("aliases = 'bach'\n", "aliases"),
        ('aliases = ["ok", ""]\n', "aliases"),
        ('alias = ["bach"]\n', "alias"),
        ('split = "random"\n', "split"),
        ("validation_fraction = 1.5\n", "validation_fraction"),
    ],
)
def test_manifest_errors_name_the_file_and_field(tmp_path: Path, extra: str, field: str):
    path = tmp_path / "x.toml"
    path.write_text(MINIMAL + extra if extra.startswith("[") else extra + MINIMAL)
    with pytest.raises(ValueError, match=rf"x\.toml: {field} "):
        load_genre_file(path)


@pytest.mark.parametrize("source", ["music21:", "music21:../etc", "http://x", "../outside"])
def test_bad_sources_are_named(tmp_path: Path, source: str):
    path = tmp_path / "x.toml"
    path.write_text(MINIMAL.replace('"music21:bach"', f'"{source}"'))
    with pytest.raises(ValueError, match=r"x\.toml: sources "):
        load_genre_file(path)


def test_unknown_music21_corpus_is_a_clear_error():
    with pytest.raises(ValueError, match="music21:no-such-corpus-here"):
        scores.corpus_files("no-such-corpus-here")


def test_manifest_ranges_and_defaults(tmp_path: Path):
    path = tmp_path / "x.toml"
    path.write_text(MINIMAL + 'aliases = ["Bach", "bach", "Hymn"]\n[scores]\ntempo_bpm = 72\nvelocity = [60, 80]\n')
    spec = load_genre_file(path)
    assert spec.aliases == ("bach", "hymn")
    assert spec.scores.tempo_bpm == (72.0, 72.0) and spec.scores.velocity == (60, 80)
    assert spec.scores.tempo == "missing" and spec.scores.pedal == "none"


def test_aliases_reach_the_catalog_and_the_bot(tmp_path: Path):
    from bot.request_text import Kind, genre_aliases, parse_request

    genres_dir = tmp_path / "genres"
    genres_dir.mkdir()
    shutil.copy(Path(__file__).parents[1] / "data" / "genres" / "chorale.toml", genres_dir)
    (genres_dir / "folk.toml").write_text('name = "folk"\nsources = ["nottingham"]\nlicense = "GPL-3.0"\n')
    models = tmp_path / "models"
    for genre in ("chorale", "folk", "classical"):
        tiny_model(models / genre / "v1", genre)
        (models / genre / "CURRENT").write_text("v1\n")
    infos = {i.name: i for i in genre_catalog(models, genres_dir)}
    assert "hymn" in infos["chorale"].aliases and infos["folk"].aliases == [] and infos["classical"].aliases == []

    aliases = genre_aliases(infos.values())
    served = sorted(infos)
    assert parse_request("@band a bach chorale please", served, aliases=aliases).genre == "chorale"
    assert parse_request("@band play some bach", served, aliases=aliases).genre == "chorale"
    assert parse_request("@band a hymn, 1 min", served, aliases=aliases).genre == "chorale"
    assert parse_request("@band chorales!", served, aliases=aliases).genre == "chorale"
    assert parse_request("@band a jig", served, aliases=aliases).genre == "folk"
    # Without the chorale model, "bach" is classical again and "hymn" a genre not played yet.
    others = ["classical", "folk"]
    assert parse_request("@band play some bach", others, aliases=aliases).genre == "classical"
    unplayable = parse_request("@band a hymn please", others, aliases=aliases)
    assert unplayable.kind is Kind.HELP and unplayable.unknown_genre == "hymn"
    # No aliases at all (an older composer): the built-in synonyms still work.
    assert parse_request("@band play some bach", served).genre == "classical"
