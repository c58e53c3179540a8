"""Corpus preparation: MIDI files -> cached token arrays, split by piece.

``prepare`` encodes every file of a genre once (each time-stretch factor of Magenta's
augmentation for the training split), caches each file's tokens by content so a second
run does no work, and bundles the genre into ``train.npz`` / ``validation.npz``:
one flat int16 array of ``BOS tokens... EOS`` sequences plus their offsets.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from composer.codec import controls, events
from composer.codec.midi import MidiError, find_midi_files, load_notes, midi_duration
from composer.corpus.genres import Genre, music21_source

log = logging.getLogger(__name__)

CODEC_VERSION = 1
STRETCHES = (0.95, 0.975, 1.0, 1.025, 1.05)
SPLIT_NAMES = ("train", "validation")


@dataclass
class SplitStats:
    files: int = 0
    seconds: float = 0.0
    events: int = 0


@dataclass
class PrepareReport:
    genre: str
    splits: dict[str, SplitStats] = field(default_factory=lambda: {s: SplitStats() for s in SPLIT_NAMES})
    skipped: list[tuple[str, str]] = field(default_factory=list)
    encoded: int = 0
    rebuilt: bool = False


# ---------------------------------------------------------------- splitting by piece


def _asap_groups(source: Path) -> dict[str, str]:
    """ASAP's performance path -> piece folder, from metadata.csv."""
    meta = source / "metadata.csv"
    if not meta.is_file():
        return {}
    with meta.open(newline="") as fh:
        return {row["midi_performance"]: row["folder"] for row in csv.DictReader(fh)}


def _work_groups(source: Path, files: list[Path]) -> dict[str, str]:
    """File path -> the path that stands for its work: ``bwv190.7-inst.mid`` goes with
    ``bwv190.7.mid``, so two encodings of one piece never sit on both sides of the split.

    A work's files are those whose names agree up to the first ``-``; it is keyed by its
    plain file when there is one, else by its first variant, so a corpus without variants
    splits exactly as ``file`` does.
    """
    works: dict[str, list[str]] = {}
    for path in files:
        rel = path.relative_to(source).as_posix()
        folder, _, name = rel.rpartition("/")
        works.setdefault(f"{folder}/{Path(name).stem.split('-')[0]}", []).append(rel)
    out = {}
    for members in works.values():
        lead = min(members, key=lambda rel: ("-" in rel.rpartition("/")[2], rel))
        out.update({rel: lead for rel in members})
    return out


def _maestro_splits(source: Path) -> dict[str, str]:
    """MAESTRO's midi_filename -> its own split (train / validation / test)."""
    found = sorted(source.glob("maestro-v*.csv"))
    if not found:
        raise FileNotFoundError(f"{source}: no maestro-v*.csv beside the MIDI files")
    with found[-1].open(newline="") as fh:
        return {row["midi_filename"]: row["split"] for row in csv.DictReader(fh)}


def _stable_fraction(key: str) -> float:
    """A number in [0, 1) that depends only on ``key``: the split never shuffles."""
    return int(hashlib.sha1(key.encode()).hexdigest()[:8], 16) / 2**32


def assign_splits(genre: Genre, data_root: Path, source_dirs: list[Path] | None = None) -> list[tuple[Path, str, str]]:
    """Every source file of a genre with its piece key and split, in a stable order.

    ``source_dirs`` (one folder per source) replaces the folders under ``data_root``:
    ``prepare`` passes it with music21 sources materialized under the cache.
    """
    out: list[tuple[Path, str, str]] = []
    for source_name, source in zip(genre.sources, source_dirs or genre.source_dirs(data_root)):
        if not source.is_dir():
            raise FileNotFoundError(f"genre {genre.name}: source folder {source} does not exist")
        asap = _asap_groups(source) if genre.split == "asap" else {}
        maestro = _maestro_splits(source) if genre.split == "maestro" else {}
        files = find_midi_files(source)
        works = _work_groups(source, files) if genre.split == "work" else {}
        for path in files:
            rel = path.relative_to(source).as_posix()
            if genre.split == "maestro":
                official = maestro.get(rel)
                if official is None:
                    continue  # not part of the release
                # MAESTRO's test split stays out of training too; we validate on both.
                split = "train" if official == "train" else "validation"
                out.append((path, f"{source_name}/{rel}", split))
                continue
            piece = asap.get(rel) or works.get(rel) or (str(Path(rel).parent) if genre.split == "asap" else rel)
            piece = f"{source_name}/{piece}"
            split = "validation" if _stable_fraction(piece) < genre.validation_fraction else "train"
            out.append((path, piece, split))
    return out


# ---------------------------------------------------------------- encoding with a cache


def _file_key(path: Path, stretches: tuple[float, ...]) -> str:
    st = path.stat()
    ident = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{stretches}|{CODEC_VERSION}"
    return hashlib.sha1(ident.encode()).hexdigest()


def encode_file(path: Path, stretches: tuple[float, ...]) -> tuple[list[np.ndarray], float]:
    """Tokens of one file for each stretch, and its length in seconds."""
    notes = load_notes(path)
    if not notes:
        raise MidiError(f"{path}: holds no notes")
    return [events.encode(notes, s) for s in stretches], midi_duration(notes)


def _encode_cached(job: tuple[Path, tuple[float, ...], Path]) -> tuple[Path, str | None, bool]:
    """Worker: encode one file into the cache unless it is there. -> (path, error, did_work)."""
    path, stretches, cache_file = job
    if cache_file.is_file():
        return path, None, False
    failed = _error_file(cache_file)
    if failed.is_file():
        return path, failed.read_text(), False
    try:
        streams, seconds = encode_file(path, stretches)
    except (MidiError, ValueError, OSError) as exc:
        failed.write_text(str(exc))  # remembered, so a second run does not parse it again
        return path, str(exc), False
    tmp = cache_file.with_name(cache_file.name + f".{os.getpid()}.tmp.npz")
    np.savez(tmp, seconds=np.float64(seconds), **{f"s{i}": s for i, s in enumerate(streams)})
    tmp.replace(cache_file)
    return path, None, True


def _error_file(cache_file: Path) -> Path:
    return cache_file.with_suffix(".err")


def _is_done(cache_file: Path) -> bool:
    return cache_file.is_file() or _error_file(cache_file).is_file()


def _bundle(streams: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate streams as BOS ... EOS sequences; returns (tokens, offsets)."""
    lengths = np.array([len(s) + 2 for s in streams], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    tokens = np.empty(int(offsets[-1]), dtype=events.TOKEN_DTYPE)
    for start, s in zip(offsets[:-1], streams):
        tokens[start] = events.BOS
        tokens[start + 1 : start + 1 + len(s)] = s
        tokens[start + 1 + len(s)] = events.EOS
    return tokens, offsets


def materialize_sources(
    genre: Genre, data_root: Path, cache_dir: Path, workers: int | None = None
) -> tuple[list[Path], list[tuple[str, str]]]:
    """One MIDI folder per source: music21 corpora performed into the cache, others as they are.

    Returns the folders and the scores that could not be converted (skipped, with a warning).
    """
    dirs, skipped = [], []
    for source, folder in zip(genre.sources, genre.source_dirs(data_root)):
        name = music21_source(source)
        if name is None:
            dirs.append(folder)
            continue
        from composer.codec.scores import materialize_music21  # music21 loads only for genres that use it

        done = materialize_music21(name, cache_dir, genre.scores, workers)
        log.info("%s: %d MIDI files from %s (%d converted now)", genre.name, done.files, source, done.converted)
        dirs.append(done.folder)
        skipped.extend(done.skipped)
    return dirs, skipped


def genre_cache_dir(cache_dir: Path, genre: str) -> Path:
    return cache_dir / "genres" / genre


def split_fingerprint(cache_dir: Path, genre: str) -> str:
    """The prepared split's fingerprint (model cards record the one they were measured on)."""
    index = genre_cache_dir(cache_dir, genre) / "index.json"
    if not index.is_file():
        raise FileNotFoundError(f"{index} is missing: run `composer prepare --genre {genre}` first")
    return json.loads(index.read_text()).get("fingerprint", "")


def split_files(cache_dir: Path, genre: str) -> dict[str, int]:
    """How many source files each prepared split holds (a training file is in the bundle once
    per time stretch); zeros when the genre is not prepared."""
    index = genre_cache_dir(cache_dir, genre) / "index.json"
    files = json.loads(index.read_text()).get("files", []) if index.is_file() else []
    return {s: sum(1 for f in files if f.get("split") == s) for s in SPLIT_NAMES}


def split_works(cache_dir: Path, genre: str, split: str) -> list[str]:
    """The work (``assign_splits``' piece key) of each source file of the split, in the bundle's
    order (a training bundle holds each file once per time stretch, a validation bundle once):
    the performances of one work (ASAP holds up to 24 of a Chopin etude) are alike, so a measure
    over a split is as uncertain as its number of works, not of pieces, says."""
    index = genre_cache_dir(cache_dir, genre) / "index.json"
    if not index.is_file():
        raise FileNotFoundError(f"{index} is missing: run `composer prepare --genre {genre}` first")
    return [f["piece"] for f in json.loads(index.read_text()).get("files", []) if f.get("split") == split]


def prepare_genre(
    genre: Genre,
    data_root: Path,
    cache_dir: Path,
    workers: int | None = None,
    progress: bool = True,
) -> PrepareReport:
    """Encode a genre's corpus into the cache and (re)build its train/validation bundles."""
    report = PrepareReport(genre.name)
    source_dirs, unconverted = materialize_sources(genre, data_root, cache_dir, workers)
    files = assign_splits(genre, data_root, source_dirs)
    if not files:
        raise FileNotFoundError(f"genre {genre.name}: no MIDI files under {', '.join(map(str, source_dirs))}")
    token_dir = cache_dir / "tokens"
    token_dir.mkdir(parents=True, exist_ok=True)
    out_dir = genre_cache_dir(cache_dir, genre.name)
    out_dir.mkdir(parents=True, exist_ok=True)

    jobs = []
    for path, _piece, split in files:
        stretches = STRETCHES if split == "train" else (1.0,)
        jobs.append((path, stretches, token_dir / f"{_file_key(path, stretches)}.npz"))
    fingerprint = hashlib.sha1(
        json.dumps([genre.data_sha1, CODEC_VERSION, [str(j[2].name) for j in jobs]]).encode()
    ).hexdigest()
    index_file = out_dir / "index.json"
    if index_file.is_file() and all(_is_done(j[2]) for j in jobs):
        index = json.loads(index_file.read_text())
        if index.get("fingerprint") == fingerprint:
            _check_splits(genre, index, len(files))
            _fill_report(report, index)
            report.skipped += unconverted
            return report

    errors: dict[Path, str] = {}
    missing = [j for j in jobs if not j[2].is_file()]  # known failures are re-reported, not re-parsed
    workers = workers or min(len(missing), os.cpu_count() or 1) or 1
    bar = tqdm(total=len(missing), desc=f"encode {genre.name}", unit="file", disable=not progress)
    if workers > 1 and len(missing) > 1:
        with ProcessPoolExecutor(workers) as pool:
            for path, error, did in pool.map(_encode_cached, missing, chunksize=4):
                _count(errors, report, path, error, did)
                bar.update()
    else:
        for job in missing:
            path, error, did = _encode_cached(job)
            _count(errors, report, path, error, did)
            bar.update()
    bar.close()

    streams: dict[str, list[np.ndarray]] = {s: [] for s in SPLIT_NAMES}
    index: dict = {"fingerprint": fingerprint, "genre": genre.name, "files": [], "skipped": []}
    for (path, piece, split), (_, stretches, cache_file) in zip(files, jobs):
        if path in errors:
            index["skipped"].append([str(path), errors[path]])
            continue
        with np.load(cache_file) as cached:
            seconds = float(cached["seconds"])
            file_streams = [cached[f"s{i}"] for i in range(len(stretches))]
        streams[split].extend(file_streams)
        plain = file_streams[stretches.index(1.0)]
        index["files"].append(
            {"path": str(path), "piece": piece, "split": split, "seconds": seconds, "events": len(plain)}
        )
    _check_splits(genre, index, len(files))
    for split in SPLIT_NAMES:
        tokens, offsets = _bundle(streams[split]) if streams[split] else _bundle([])
        np.savez(out_dir / f"{split}.npz", tokens=tokens, offsets=offsets)
    index_file.write_text(json.dumps(index, indent=1))
    report.rebuilt = True
    _fill_report(report, index)
    report.skipped += unconverted
    return report


class EmptySplitError(ValueError):
    """A genre's corpus leaves a split without a usable file: training could not run on it."""


def _check_splits(genre: Genre, index: dict, found: int) -> None:
    """Refuse a corpus that leaves the training or the validation split empty, saying what is missing.

    Nothing is bundled then, so ``train`` keeps reporting an unprepared genre rather than
    failing later on an empty split."""
    per_split = {s: sum(1 for f in index["files"] if f["split"] == s) for s in SPLIT_NAMES}
    usable = sum(per_split.values())
    skipped = f" ({len(index['skipped'])} of {found} unreadable or empty)" if index["skipped"] else ""
    if usable == 0:
        raise EmptySplitError(f"genre {genre.name}: no usable MIDI file{skipped}: add readable MIDI files")
    if per_split["validation"] == 0 or per_split["train"] == 0:
        empty = "validation" if per_split["validation"] == 0 else "training"
        raise EmptySplitError(
            f"genre {genre.name}: {usable} usable file(s){skipped}, none in the {empty} split: "
            f"both splits need at least one piece; add files or change validation_fraction "
            f"(now {genre.validation_fraction:g})"
        )


def _count(errors: dict, report: PrepareReport, path: Path, error: str | None, did: bool) -> None:
    if error:
        errors[path] = error
        log.warning("skipped %s", error)
    elif did:
        report.encoded += 1


def _fill_report(report: PrepareReport, index: dict) -> None:
    for entry in index["files"]:
        stats = report.splits[entry["split"]]
        stats.files += 1
        stats.seconds += entry["seconds"]
        stats.events += entry["events"]
    report.skipped = [tuple(s) for s in index["skipped"]]


# ---------------------------------------------------------------- loading for training


@dataclass
class TokenBundle:
    """Sequences of one genre and split: a flat token array and sequence offsets."""

    tokens: np.ndarray
    offsets: np.ndarray

    @classmethod
    def load(cls, cache_dir: Path, genre: str, split: str) -> TokenBundle:
        path = genre_cache_dir(cache_dir, genre) / f"{split}.npz"
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: run `composer prepare --genre {genre}` first")
        with np.load(path) as data:
            return cls(data["tokens"], data["offsets"])

    @classmethod
    def load_many(cls, cache_dir: Path, genres: list[str], split: str) -> TokenBundle:
        """Several genres' sequences as one bundle (for pre-training on all of them)."""
        parts = [cls.load(cache_dir, g, split) for g in genres]
        if len(parts) == 1:
            return parts[0]
        tokens = np.concatenate([p.tokens for p in parts])
        starts = np.cumsum([0] + [len(p.tokens) for p in parts[:-1]])
        offsets = np.concatenate([p.offsets[:-1] + s for p, s in zip(parts, starts)] + [[len(tokens)]])
        return cls(tokens, offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def sequence(self, i: int) -> np.ndarray:
        return self.tokens[self.offsets[i] : self.offsets[i + 1]]

    @property
    def num_events(self) -> int:
        return int(np.count_nonzero(self.tokens < events.NUM_EVENTS))


class CropSampler:
    """Random training windows with Magenta's transposition augmentation.

    Every window of ``length + 1`` tokens inside one sequence is equally likely, except
    that a ``start_fraction`` of them begin at their piece's start (BOS): uniform windows
    almost never do, and a model that never saw a piece open samples from BOS as if from
    the middle of one (note-offs of notes never struck, no velocity before the first
    note). Sequences shorter than a window are padded. Time stretch is already in the bundle.
    """

    def __init__(
        self, bundle: TokenBundle, length: int, transpose: int = 3, seed: int = 0, start_fraction: float = 0.0
    ):
        self.bundle = bundle
        self.length = length
        self.transpose = transpose
        self.start_fraction = start_fraction
        self.rng = np.random.default_rng(seed)
        lengths = np.diff(bundle.offsets)
        self.windows = np.maximum(lengths - length, 1)
        self.cumulative = np.cumsum(self.windows)

    def batch(self, size: int) -> np.ndarray:
        return self._batch(size, with_controls=False)[0]

    def batch_with_controls(self, size: int) -> tuple[np.ndarray, np.ndarray]:
        """Crops and their controls (composer.codec.controls): ``controls[:, j]`` is the control of
        token j+1, the one the model predicts from input j. Padding carries "no control"."""
        tokens, controls = self._batch(size, with_controls=True)
        return tokens, controls

    def _batch(self, size: int, with_controls: bool) -> tuple[np.ndarray, np.ndarray | None]:
        out = np.full((size, self.length + 1), events.PAD, dtype=np.int64)
        ctrl = np.tile(controls.NO_CONTROL, (size, self.length, 1)) if with_controls else None
        picks = self.rng.integers(0, self.cumulative[-1], size)
        seqs = np.searchsorted(self.cumulative, picks, side="right")
        openings = self.rng.random(size) < self.start_fraction if self.start_fraction else np.zeros(size, bool)
        for row, (pick, seq) in enumerate(zip(picks, seqs)):
            start = 0 if openings[row] else pick - (self.cumulative[seq] - self.windows[seq])
            first, last = self.bundle.offsets[seq], self.bundle.offsets[seq + 1]
            lo = first + start
            hi = min(lo + self.length + 1, last)
            window = self.bundle.tokens[lo:hi]
            semitones = self._transposition(window) if self.transpose else 0
            out[row, : len(window)] = events.transpose(window, semitones) if semitones else window
            if ctrl is not None:
                # the whole piece, so a window sees the notes that sound into it and the seconds after it
                piece = controls.piece_controls(self.bundle.tokens[first:last])[lo - first + 1 : hi - first]
                ctrl[row, : len(piece)] = controls.transpose_controls(piece, semitones) if semitones else piece
        return out, ctrl

    def _transposition(self, window: np.ndarray) -> int:
        span = events.pitch_range(window)
        if span is None:
            return 0
        low = max(-self.transpose, -span[0])
        high = min(self.transpose, events.NUM_PITCHES - 1 - span[1])
        return int(self.rng.integers(low, high + 1))
