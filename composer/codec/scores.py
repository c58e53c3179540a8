"""Notated scores as a genre source: a music21 corpus performed into MIDI files under the cache.

A manifest source ``"music21:<name>"`` names a corpus that ships inside the music21
package: a composer or collection folder (``music21.corpus.getComposer``, e.g. ``bach``,
its ~400 chorales) or else one work (``music21.corpus.getWork``, e.g. ``oneills1850``,
whose many tunes become one file each). Nothing is downloaded. Roman-numeral analyses
(``.rntxt``) are not voiced scores and are left out.

A score has no performance in it, so each is played by the genre's ``[scores]`` settings
(``composer.corpus.genres.ScoreOptions``): tempo (the score's marks, or a fixed or per-piece
tempo from a range), velocity (fixed, or a per-note humanize range), optional bar-wise
sustain pedal, and held fermatas. Repeats are written out where music21 can expand them,
tied notes become one note, and voices in unison sound once (as on a piano). The random
choices are seeded by the score's content, so a score always gives the same MIDI.

The MIDI files land in ``<cache>/corpora/music21-<name>/<settings key>/``, with an
``index.json`` mapping each score (by content hash) to its files or its error: a second
``prepare`` converts nothing, and a score that fails is skipped with a warning, never fatal.
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import json
import logging
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from composer.corpus.genres import ScoreOptions

log = logging.getLogger(__name__)

CONVERTER_VERSION = 1
# Score formats, best first: a score in two formats (bwv277.mxl, bwv277.krn) is read once, from the first.
SCORE_SUFFIXES = (".mxl", ".musicxml", ".xml", ".mei", ".krn", ".abc", ".capx", ".md", ".mid", ".midi")
PEDAL_GAP = 0.05  # seconds the pedal is up at a bar line (a legato pedal change)


class ScoreError(ValueError):
    pass


@dataclass
class MaterializeReport:
    folder: Path
    converted: int = 0  # scores converted by this run
    files: int = 0  # MIDI files in the folder
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (score, why)


# ---------------------------------------------------------------- finding a music21 corpus


def _music21_version() -> str:
    import music21

    return ".".join(music21.__version__.split(".")[:2])


def corpus_files(name: str) -> tuple[Path, list[Path]]:
    """(root, score files) of the music21 corpus ``name``; ValueError if it has none."""
    from music21 import common, corpus

    root = Path(common.getCorpusFilePath())
    paths = [Path(p) for p in corpus.getComposer(name)]
    if not paths:
        try:
            work = corpus.getWork(name)
        except Exception:  # music21 raises its own CorpusException for unknown works
            work = []
        paths = [Path(p) for p in (work if isinstance(work, list) else [work])]
    best: dict[Path, Path] = {}
    for path in sorted(p for p in paths if p.suffix.lower() in SCORE_SUFFIXES):
        rank = SCORE_SUFFIXES.index
        other = best.get(path.with_suffix(""))
        if other is None or rank(path.suffix.lower()) < rank(other.suffix.lower()):
            best[path.with_suffix("")] = path
    paths = sorted(best.values())
    if not paths:
        raise ValueError(f"music21:{name}: the music21 corpus has no composer, collection or work of that name")
    return root, paths


# ---------------------------------------------------------------- performing one score


class _Clock:
    """Score offsets (quarter notes) -> seconds, by tempo marks, with fermatas held longer."""

    def __init__(self, marks: list[tuple[float, float]], fermatas: dict[float, float], hold: float):
        marks = sorted(dict(marks).items())  # one tempo per offset (every part repeats the mark)
        self.starts = [o for o, _ in marks]
        self.spq = [60.0 / bpm for _, bpm in marks]
        self.base = [0.0]
        for i in range(1, len(marks)):
            self.base.append(self.base[-1] + (self.starts[i] - self.starts[i - 1]) * self.spq[i - 1])
        self.fermatas = sorted(fermatas.items()) if hold > 1.0 else []
        self.hold = hold

    def _plain(self, q: float) -> float:
        i = max(bisect.bisect_right(self.starts, q) - 1, 0)
        return self.base[i] + (q - self.starts[i]) * self.spq[i]

    def __call__(self, q: float) -> float:
        t = self._plain(q)
        for start, length in self.fermatas:
            if q <= start:
                break
            held = min(q, start + length)
            t += (self.hold - 1.0) * (self._plain(held) - self._plain(start))
        return t


def perform(score, opts: ScoreOptions, seed: int):
    """A pretty_midi.PrettyMIDI of one music21 score, played by ``opts``."""
    import pretty_midi
    from music21 import expressions, harmony, stream, tempo

    rng = np.random.default_rng(seed)
    with contextlib.suppress(Exception):  # inconsistent repeat marks: play it as written
        score = score.expandRepeats()
    score = score.stripTies()
    flat = score.flatten()

    bpm = round(float(rng.uniform(*opts.tempo_bpm)), 1) if opts.tempo_bpm[0] < opts.tempo_bpm[1] else opts.tempo_bpm[0]
    marks: list[tuple[float, float]] = []
    if opts.tempo == "missing":
        for mark in flat.getElementsByClass(tempo.MetronomeMark):
            qpm = mark.getQuarterBPM()
            if qpm and 10 <= qpm <= 500:
                marks.append((float(mark.offset), float(qpm)))
    if not marks or marks[0][0] > 0:
        marks.insert(0, (0.0, bpm))

    notes = []
    fermatas: dict[float, float] = {}
    for el in flat.notes:
        if isinstance(el, harmony.Harmony):  # chord symbols are labels, not notes
            continue
        start, length = float(el.offset), float(el.quarterLength)
        if length <= 0:  # grace notes
            continue
        if any(isinstance(e, expressions.Fermata) for e in el.expressions):
            fermatas[start] = max(fermatas.get(start, 0.0), length)
        notes.extend((p.midi, start, start + length) for p in el.pitches if 0 <= p.midi <= 127)
    if not notes:
        raise ScoreError("holds no notes")
    clock = _Clock(marks, fermatas, opts.fermata)

    timed = sorted((pitch, clock(on), clock(off)) for pitch, on, off in notes)
    piano = pretty_midi.Instrument(program=0, name="piano")
    for i, (pitch, on, off) in enumerate(timed):
        if i + 1 < len(timed) and timed[i + 1][0] == pitch and timed[i + 1][1] < off:
            if timed[i + 1][1] <= on + 1e-6:  # a unison: one key, held as long as the longer
                timed[i + 1] = (pitch, on, max(off, timed[i + 1][2]))
                continue
            off = timed[i + 1][1]  # the key is struck again: the earlier note ends there
        velocity = int(rng.integers(opts.velocity[0], opts.velocity[1] + 1))
        piano.notes.append(pretty_midi.Note(velocity=velocity, pitch=int(pitch), start=on, end=off))
    piano.notes.sort(key=lambda n: (n.start, n.pitch))

    if opts.pedal == "bar":
        end = max(n.end for n in piano.notes)
        part = score.parts[0] if isinstance(score, stream.Score) and score.parts else score
        bars = sorted({clock(float(m.offset)) for m in part.getElementsByClass(stream.Measure)} | {0.0})
        for t in bars:
            if t < end:
                piano.control_changes.append(pretty_midi.ControlChange(64, 0, t))
                piano.control_changes.append(pretty_midi.ControlChange(64, 127, min(t + PEDAL_GAP, end)))
        piano.control_changes.append(pretty_midi.ControlChange(64, 0, end))

    midi = pretty_midi.PrettyMIDI(initial_tempo=120.0)
    midi.instruments.append(piano)
    return midi


def _convert(job: tuple[Path, str, list[str], Path, ScoreOptions]) -> tuple[str, list[str], str | None]:
    """Worker: one score file -> MIDI file(s) in ``out_dir``. -> (source key, outputs, error)."""
    path, digest, outputs, out_dir, opts = job
    key = outputs[0]
    try:
        from music21 import converter, stream

        parsed = converter.parse(path)
        scores = list(parsed.scores) if isinstance(parsed, stream.Opus) else [parsed]
        if not scores:
            raise ScoreError("holds no scores")
        written, errors = [], []
        stem = key[: -len(".mid")]
        for i, score in enumerate(scores):
            name = key if len(scores) == 1 else f"{stem}-{i + 1:03d}.mid"
            try:
                midi = perform(score, opts, int(digest[:15], 16) + i)
            except Exception as exc:  # one tune of a collection failing costs only that tune
                errors.append(f"{name}: {type(exc).__name__}: {exc}")
                continue
            target = out_dir / name
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
            midi.write(str(tmp))
            tmp.replace(target)
            written.append(name)
        for error in errors:
            log.warning("music21 score %s: %s", path.name, error)
        if not written:
            raise ScoreError("; ".join(errors) or "nothing to write")
        return key, written, None
    except Exception as exc:  # music21 raises many kinds of errors on odd files: never fatal
        return key, [], f"{type(exc).__name__}: {exc}".strip()[:500]


def materialize(
    name: str,
    root: Path,
    files: list[Path],
    cache_dir: Path,
    opts: ScoreOptions,
    workers: int | None = None,
) -> MaterializeReport:
    """Perform score ``files`` (under ``root``) into MIDI under the cache, reusing earlier runs."""
    settings_key = hashlib.sha1(f"{opts.key()}|{CONVERTER_VERSION}|{_music21_version()}".encode()).hexdigest()[:12]
    out_dir = cache_dir / "corpora" / f"music21-{name}" / settings_key
    out_dir.mkdir(parents=True, exist_ok=True)
    index_file = out_dir / "index.json"
    index: dict[str, dict] = json.loads(index_file.read_text()) if index_file.is_file() else {}
    report = MaterializeReport(out_dir)

    jobs = []
    for path in files:
        rel = path.relative_to(root).with_suffix(".mid").as_posix()
        digest = hashlib.sha1(path.read_bytes()).hexdigest()
        entry = index.get(rel)
        if entry and entry["sha1"] == digest and all((out_dir / o).is_file() for o in entry["outputs"]):
            continue
        jobs.append((path, digest, [rel], out_dir, opts))
    workers = workers or min(len(jobs), os.cpu_count() or 1) or 1
    if jobs:  # a large corpus takes minutes: say what is going on
        log.info("music21:%s: performing %d of %d scores into MIDI under %s", name, len(jobs), len(files), out_dir)
    bar = tqdm(total=len(jobs), desc=f"convert music21:{name}", unit="score", disable=not jobs)
    parallel = workers > 1 and len(jobs) > 1
    results = []
    with ProcessPoolExecutor(workers) if parallel else contextlib.nullcontext() as pool:
        for result in pool.map(_convert, jobs, chunksize=4) if pool else map(_convert, jobs):
            results.append(result)
            bar.update()
    bar.close()
    for (_, digest, *_rest), (key, outputs, error) in zip(jobs, results):
        index[key] = {"sha1": digest, "outputs": outputs, "error": error}
        report.converted += error is None
    tmp = index_file.with_name(f"index.json.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(index, indent=1, sort_keys=True))
    tmp.replace(index_file)

    wanted = {path.relative_to(root).with_suffix(".mid").as_posix() for path in files}
    keep: set[str] = set()
    for key in sorted(wanted):
        entry = index[key]
        if entry["error"]:
            report.skipped.append((f"music21:{name}/{key}", entry["error"]))
            log.warning("skipped music21 score %s: %s", key, entry["error"])
        keep.update(entry["outputs"])
    for stale in out_dir.rglob("*.mid"):  # scores no longer in the corpus leave the genre too
        if stale.relative_to(out_dir).as_posix() not in keep:
            stale.unlink()
    report.files = len(keep)
    return report


def materialize_music21(
    name: str, cache_dir: Path, opts: ScoreOptions, workers: int | None = None
) -> MaterializeReport:
    """The music21 corpus ``name`` as a folder of MIDI files under the cache."""
    root, files = corpus_files(name)
    return materialize(name, root, files, cache_dir, opts, workers)
