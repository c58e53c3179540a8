"""composer prepare on a small corpus made of real files, plus a corrupt and an empty one."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from composer.codec import events
from composer.corpus.data import CropSampler, TokenBundle, assign_splits, prepare_genre, split_works
from composer.corpus.genres import Genre, load_genre_file
from tests.conftest import DATA_ROOT, make_midi, needs_corpora


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """Six real Nottingham tunes, a corrupt file and an empty one."""
    root = tmp_path / "data" / "tunes"
    root.mkdir(parents=True)
    source = DATA_ROOT / "nottingham"
    for path in sorted(source.glob("*.mid"))[:6]:
        shutil.copy(path, root / path.name)
    (root / "broken.mid").write_bytes(b"MThd garbage")
    make_midi(root / "silent.mid", [])
    return tmp_path / "data"


def genre(fraction: float = 0.5) -> Genre:
    return Genre("tunes", "test tunes", ("tunes",), "GPL-3.0", split="file", validation_fraction=fraction)


@needs_corpora
def test_prepare_encodes_skips_bad_files_and_is_idempotent(corpus: Path, tmp_path: Path):
    cache = tmp_path / "cache"
    first = prepare_genre(genre(), corpus, cache, workers=2, progress=False)
    assert first.rebuilt and first.encoded == 6
    assert {Path(p).name for p, _ in first.skipped} == {"broken.mid", "silent.mid"}
    assert sum(s.files for s in first.splits.values()) == 6
    assert first.splits["train"].files >= 1 and first.splits["validation"].files >= 1
    assert all(s.events > 0 and s.seconds > 0 for s in first.splits.values())

    second = prepare_genre(genre(), corpus, cache, workers=2, progress=False)
    assert not second.rebuilt and second.encoded == 0
    assert second.splits == first.splits
    # How pieces are composed is no part of the data: tuning it rebuilds nothing; the split does.
    from dataclasses import replace

    tuned = replace(genre(), form="AABB", restate=0.3, key_hold=1.0, cache=0.2, aliases=("reels",), keys={"G major": 1})
    assert tuned.data_sha1 == genre().data_sha1
    assert not prepare_genre(tuned, corpus, cache, workers=2, progress=False).rebuilt
    assert genre(0.3).data_sha1 != genre().data_sha1

    train = TokenBundle.load(cache, "tunes", "train")
    val = TokenBundle.load(cache, "tunes", "validation")
    # Five time stretches of every training file; one plain copy of every validation file.
    assert len(train) == 5 * first.splits["train"].files
    assert len(val) == first.splits["validation"].files
    works = split_works(cache, "tunes", "validation")  # one per validation piece, in the bundle's order
    assert len(works) == len(val) and len(split_works(cache, "tunes", "train")) * 5 == len(train)
    assert all(Path(w).name in {p.name for p in (corpus / "tunes").glob("*.mid")} for w in works)
    seq = val.sequence(0)
    assert seq[0] == events.BOS and seq[-1] == events.EOS
    assert np.all(seq[1:-1] < events.NUM_EVENTS)


@needs_corpora
def test_a_changed_file_is_encoded_again(corpus: Path, tmp_path: Path):
    cache = tmp_path / "cache"
    prepare_genre(genre(), corpus, cache, workers=1, progress=False)
    victim = sorted((corpus / "tunes").glob("a*.mid"))[0]
    victim.write_bytes(victim.read_bytes())  # same bytes, new mtime
    import os

    os.utime(victim, ns=(1, 1))
    again = prepare_genre(genre(), corpus, cache, workers=1, progress=False)
    assert again.rebuilt and again.encoded == 1


def test_split_is_by_piece_for_asap_metadata(tmp_path: Path):
    source = tmp_path / "asap"
    for folder in ("Bach/Fugue/bwv_1", "Bach/Fugue/bwv_2", "Chopin/Etude/op_10"):
        (source / folder).mkdir(parents=True)
        for performer in ("A", "B", "C"):
            make_midi(source / folder / f"{performer}.mid", [{"notes": [(60, 80, 0, 1)]}])
    rows = ["composer,title,folder,midi_performance"] + [
        f"x,y,{folder},{folder}/{p}.mid"
        for folder in ("Bach/Fugue/bwv_1", "Bach/Fugue/bwv_2", "Chopin/Etude/op_10")
        for p in ("A", "B", "C")
    ]
    (source / "metadata.csv").write_text("\n".join(rows) + "\n")
    spec = Genre("classical", "", ("asap",), "CC", split="asap", validation_fraction=0.5)
    files = assign_splits(spec, tmp_path)
    assert len(files) == 9
    by_piece: dict[str, set[str]] = {}
    for _path, piece, split in files:
        by_piece.setdefault(piece, set()).add(split)
    assert len(by_piece) == 3
    assert all(len(splits) == 1 for splits in by_piece.values()), "a piece straddles train and validation"


def test_work_split_keeps_variant_encodings_of_a_piece_together(tmp_path: Path):
    source = tmp_path / "scores"
    names = ["bwv1.6", "bwv1.6-inst", "bwv2.6-a", "bwv2.6-b", "bwv3.6", "bwv3.60", "sub/bwv1.6-lpz"]
    names += [f"x{i}" for i in range(40)]
    for name in names:
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        make_midi(source / f"{name}.mid", [{"notes": [(60, 80, 0, 1)]}])
    spec = Genre("c", "", ("scores",), "CC", split="work", validation_fraction=0.5)
    work = {Path(p).relative_to(source).as_posix(): (piece, split) for p, piece, split in assign_splits(spec, tmp_path)}
    assert work["bwv1.6-inst.mid"] == work["bwv1.6.mid"] and work["bwv1.6.mid"][0] == "scores/bwv1.6.mid"
    assert work["bwv2.6-b.mid"] == work["bwv2.6-a.mid"] and work["bwv2.6-a.mid"][0] == "scores/bwv2.6-a.mid"
    assert work["bwv3.60.mid"][0] != work["bwv3.6.mid"][0]  # another number, another piece
    assert work["sub/bwv1.6-lpz.mid"][0] == "scores/sub/bwv1.6-lpz.mid"  # works are per folder
    # Files without variants split exactly as split = "file" splits them.
    by_file = {Path(p).relative_to(source).as_posix(): split for p, _, split in assign_splits(
        Genre("c", "", ("scores",), "CC", split="file", validation_fraction=0.5), tmp_path)}  # fmt: skip
    assert all(work[f"x{i}.mid"][1] == by_file[f"x{i}.mid"] for i in range(40))
    assert {s for _, s in work.values()} == {"train", "validation"}


def test_maestro_split_follows_its_csv(tmp_path: Path):
    source = tmp_path / "maestro"
    (source / "2004").mkdir(parents=True)
    for name in ("a", "b", "c"):
        make_midi(source / "2004" / f"{name}.midi", [{"notes": [(60, 80, 0, 1)]}])
    (source / "maestro-v3.0.0.csv").write_text(
        "canonical_composer,split,midi_filename\nX,train,2004/a.midi\nY,validation,2004/b.midi\nZ,test,2004/c.midi\n"
    )
    spec = Genre("m", "", ("maestro",), "CC", split="maestro")
    assert {Path(p).name: s for p, _, s in assign_splits(spec, tmp_path)} == {
        "a.midi": "train",
        "b.midi": "validation",
        "c.midi": "validation",
    }


def test_shipped_manifests_load():
    from composer.config import settings
    from composer.corpus.genres import list_genres

    names = list_genres()
    assert {"classical", "pop", "folk"} <= set(names)
    for name in names:
        spec = load_genre_file(settings().genres_dir / f"{name}.toml")
        assert spec.license and spec.sources


def test_crop_sampler_windows_and_transposition():
    seqs = [
        events.encode([events.Note(60 + i % 5, 80, i * 0.1, i * 0.1 + 0.05) for i in range(200)]),
        events.encode([events.Note(127, 80, 0.0, 0.1)]),
    ]
    tokens = np.concatenate([np.concatenate([[events.BOS], s, [events.EOS]]) for s in seqs]).astype(np.int16)
    offsets = np.array([0, len(seqs[0]) + 2, len(tokens)])
    sampler = CropSampler(TokenBundle(tokens, offsets), length=64, transpose=3, seed=1)
    batch = sampler.batch(3000)
    assert batch.shape == (3000, 65)
    for row in batch:
        notes = row[row < events.TIME_SHIFT] % 128
        assert notes.min() >= 57 and notes.max() <= 127
    short_rows = [row for row in batch if (row == events.PAD).any()]
    assert short_rows, "the short sequence should be sampled and padded"
    for row in short_rows:
        assert set(row[row < events.TIME_SHIFT] % 128) <= {124, 125, 126, 127}


def test_a_share_of_crops_opens_its_piece(tmp_path):
    """start_fraction crops begin with BOS; uniform crops of long pieces almost never do."""
    pieces = [(np.arange(1000) + 7 * i) % 300 for i in range(5)]
    tokens = np.concatenate([np.concatenate([[events.BOS], p, [events.EOS]]) for p in pieces]).astype(np.int16)
    bundle = TokenBundle(tokens, np.arange(6) * 1002)
    uniform = CropSampler(bundle, 64, transpose=0, seed=1).batch(2000)
    openings = CropSampler(bundle, 64, transpose=0, seed=1, start_fraction=0.25).batch(2000)
    assert (uniform[:, 0] == events.BOS).mean() < 0.01
    assert 0.2 < (openings[:, 0] == events.BOS).mean() < 0.3
    opened = openings[openings[:, 0] == events.BOS]
    assert all(any((row[1:] == p[:64]).all() for p in pieces) for row in opened)
