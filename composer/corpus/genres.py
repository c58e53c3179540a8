"""Genre manifests: which corpora make a genre, under which license.

A genre is a small TOML file in ``data/genres/``; adding one needs no code::

    name = "chorale"                      # the file's stem, as requests name the genre
    description = "..."
    sources = ["music21:bach"]            # folders under the data root, or music21:<name>
    license = "..."
    attribution = "..."
    split = "work"                        # file, work, asap or maestro (see composer.corpus.data)
    validation_fraction = 0.1
    aliases = ["bach", "chorales"]        # optional: words people use for it (the bot reads them)
    form = "ABAB"                         # optional: the form plan pieces follow (composer.contract.FORMS)
    restate = 0.75                        # optional: share of a restated section replayed before varying it
    cache = 0.0                           # optional: the neural cache's weight (composer.sampling.cache)
    key_hold = 0.0                        # optional: how firmly a piece keeps its key (SampleRequest.key_hold)
    echo = 0.0                            # optional: seconds of each new phrase played twice (SampleRequest.echo)
    echo_gap = 0.0                        # optional: seconds of free play after each echo (SampleRequest.echo_gap)
    density = 5.5                         # optional: notes per second asked of a conditioned model when none is

    [structure]                           # optional: what its real music measures (`composer structure --profile`)
    key_steadiness = 0.55                 # the composer keeps the candidate closest to these
    recurrence = 0.24
    loopiness = 0.14

    [scores]                              # optional: how notated scores are performed
    tempo_bpm = [66, 84]                  # quarter notes per minute, or a [low, high] range (per piece)
    tempo = "override"                    # "missing": only where the score has no tempo mark
    velocity = 72                         # a fixed MIDI velocity, or a [low, high] humanize range (per note)
    pedal = "none"                        # "bar": sustain pedal held through each bar, changed at the bar line
    fermata = 1.5                         # notes under a fermata last this many times their value

A source is either a folder of MIDI files under the data root (``"nottingham"``), or
``"music21:<name>"``: a corpus that ships inside the music21 package, by composer or
collection (``music21:bach`` is its Bach chorales; see ``composer.codec.scores``). Scores have
no performance in them, so ``prepare`` performs them by the ``[scores]`` settings into
MIDI under the cache, and they then flow through the same pipeline as MIDI corpora. The
``[scores]`` table has no effect on MIDI folder sources.
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from composer.analysis.structure import MEASURES as PROFILE_MEASURES
from composer.config import settings
from composer.contract import FORMS, MAX_DENSITY, MAX_ECHO_SECONDS, MAX_SECONDS, key_name, read_key

SPLITS = ("asap", "maestro", "file", "work")
MUSIC21_PREFIX = "music21:"
TEMPO_MODES = ("missing", "override")
PEDAL_MODES = ("none", "bar")
MANIFEST_KEYS = frozenset(
    {
        "name",
        "description",
        "sources",
        "license",
        "attribution",
        "split",
        "validation_fraction",
        "aliases",
        "form",
        "restate",
        "cache",
        "key_hold",
        "echo",
        "echo_gap",
        "density",
        "structure",
        "keys",
        "scores",
    }
)
_MUSIC21_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


def _is_number(value: Any) -> bool:
    """A TOML integer or float (TOML's true and false are Python ints too, and are not numbers here)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class UnknownGenreError(ValueError):
    pass


@dataclass(frozen=True)
class ScoreOptions:
    """How a notated score (a music21 source) becomes a performance: tempo, loudness, pedal."""

    tempo_bpm: tuple[float, float] = (100.0, 100.0)
    tempo: str = "missing"
    velocity: tuple[int, int] = (80, 80)
    pedal: str = "none"
    fermata: float = 1.0

    def key(self) -> str:
        """Identifies the settings, so a change performs the scores again."""
        return f"{self.tempo_bpm}|{self.tempo}|{self.velocity}|{self.pedal}|{self.fermata}"


@dataclass(frozen=True)
class Genre:
    name: str
    description: str
    sources: tuple[str, ...]
    license: str
    attribution: str = ""
    split: str = "file"
    validation_fraction: float = 0.1
    aliases: tuple[str, ...] = ()
    form: str | None = None
    """The form plan its pieces follow (composer.contract.FORMS); None: free."""
    restate: float | None = None
    """The share of a restated section replayed as it first went (None: the sampler's default)."""
    cache: float = 0.0
    """The neural cache's weight in sampling (composer.sampling.cache); 0: the model alone."""
    key_hold: float = 0.0
    """How firmly a piece keeps the key it set out in (composer.sampling.sample.SampleRequest)."""
    echo: float = 0.0
    """Seconds of each phrase of new material played twice (composer.sampling.sample.SampleRequest)."""
    echo_gap: float = 0.0
    """Seconds the model plays freely after each echo (composer.sampling.sample.SampleRequest)."""
    density: float | None = None
    """Notes per second a model trained with controls is asked for when the listener asks for no
    density (its real music's); None: no density control then, the model's own pace."""
    structure: dict[str, float] = field(default_factory=dict, hash=False)
    """What the genre's real music measures (composer.analysis.structure, on its training pieces):
    the composer keeps the candidate closest to it. Empty: no preference."""
    keys: dict[str, float] = field(default_factory=dict, hash=False)
    """The keys its real music is in, as shares of its training pieces: a piece asked for no key
    is moved to one of them (its mode kept). Empty: it stays where the model put it."""
    scores: ScoreOptions = field(default_factory=ScoreOptions)

    @property
    def data_sha1(self) -> str:
        """Identifies what the genre's prepared data is made of (its sources, split, validation
        share and score settings): how its pieces are composed (form, restate, cache, key_hold, echo and its gap,
        [structure], [keys]) and its words (aliases, description) leave it alone, so tuning
        them needs no new ``prepare`` and leaves the models' recorded split valid."""
        made_of = [self.name, list(self.sources), self.split, self.validation_fraction, self.scores.key()]
        return hashlib.sha1(json.dumps(made_of).encode()).hexdigest()

    def source_dirs(self, data_root: Path) -> list[Path]:
        """Folder sources under the data root (music21 sources are materialized by ``prepare``)."""
        return [data_root / s for s in self.sources]


def music21_source(source: str) -> str | None:
    """The corpus name of a ``music21:<name>`` source; None for a folder source."""
    return source[len(MUSIC21_PREFIX) :] if source.startswith(MUSIC21_PREFIX) else None


class _Manifest:
    """Reads and checks one manifest's fields; every error names the file and the field."""

    def __init__(self, path: Path, spec: dict[str, Any]):
        self.path, self.spec = path, spec

    def error(self, where: str, message: str) -> ValueError:
        return ValueError(f"{self.path}: {where} {message}")

    def required(self, key: str) -> Any:
        if key not in self.spec:
            raise ValueError(f"{self.path}: genre manifest lacks {key!r}")
        return self.spec[key]

    def text(self, key: str, value: Any) -> str:
        if not isinstance(value, str):
            raise self.error(key, f"must be a string, not {value!r}")
        return value

    def words(self, key: str, value: Any, nonempty: bool = False) -> tuple[str, ...]:
        if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
            raise self.error(key, 'must be a list of non-empty strings, like ["a", "b"]')
        if nonempty and not value:
            raise self.error(key, "must name at least one source")
        return tuple(v.strip() for v in value)

    def number_or_range(self, key: str, value: Any, low: float, high: float, integer: bool) -> tuple[Any, Any]:
        kind = int if integer else (int, float)
        pair = value if isinstance(value, list) else [value, value]
        if (
            len(pair) != 2
            or not all(isinstance(v, kind) and not isinstance(v, bool) for v in pair)
            or not all(low <= v <= high for v in pair)
            or pair[0] > pair[1]
        ):
            what = "an integer" if integer else "a number"
            raise self.error(key, f"must be {what} in {low:g}..{high:g} or a [low, high] range of them, not {value!r}")
        return (int(pair[0]), int(pair[1])) if integer else (float(pair[0]), float(pair[1]))

    def scores(self) -> ScoreOptions:
        table = self.spec.get("scores", {})
        if not isinstance(table, dict):
            raise self.error("scores", "must be a table ([scores])")
        known = {"tempo_bpm", "tempo", "velocity", "pedal", "fermata"}
        for key in table:
            if key not in known:
                raise self.error(f"scores.{key}", f"is not a setting (known: {', '.join(sorted(known))})")
        default = ScoreOptions()
        opts = ScoreOptions(
            tempo_bpm=self.number_or_range(
                "scores.tempo_bpm", table.get("tempo_bpm", list(default.tempo_bpm)), 20, 400, False
            ),
            tempo=table.get("tempo", default.tempo),
            velocity=self.number_or_range(
                "scores.velocity", table.get("velocity", list(default.velocity)), 1, 127, True
            ),
            pedal=table.get("pedal", default.pedal),
            fermata=table.get("fermata", default.fermata),
        )
        if opts.tempo not in TEMPO_MODES:
            raise self.error("scores.tempo", f"must be one of {', '.join(TEMPO_MODES)}, not {opts.tempo!r}")
        if opts.pedal not in PEDAL_MODES:
            raise self.error("scores.pedal", f"must be one of {', '.join(PEDAL_MODES)}, not {opts.pedal!r}")
        if not isinstance(opts.fermata, (int, float)) or isinstance(opts.fermata, bool) or not 1 <= opts.fermata <= 4:
            raise self.error("scores.fermata", f"must be a number in 1..4, not {opts.fermata!r}")
        return ScoreOptions(opts.tempo_bpm, opts.tempo, opts.velocity, opts.pedal, float(opts.fermata))


def load_genre_file(path: Path) -> Genre:
    raw = path.read_bytes()
    try:
        spec = tomllib.loads(raw.decode())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not a valid TOML manifest: {exc}") from None
    m = _Manifest(path, spec)
    for key in spec:
        if key not in MANIFEST_KEYS:
            raise m.error(key, f"is not a manifest field (known: {', '.join(sorted(MANIFEST_KEYS))})")
    sources = m.words("sources", m.required("sources"), nonempty=True)
    for source in sources:
        corpus = music21_source(source)
        if corpus is not None and not _MUSIC21_NAME.match(corpus):
            raise m.error("sources", f"entry {source!r} must name a music21 corpus, like 'music21:bach'")
        if corpus is None and (":" in source or ".." in Path(source).parts or Path(source).is_absolute()):
            raise m.error("sources", f"entry {source!r} must be a folder under the data root or music21:<name>")
    aliases = m.words("aliases", spec.get("aliases", []))
    genre = Genre(
        name=m.text("name", m.required("name")),
        description=m.text("description", spec.get("description", "")),
        sources=sources,
        license=m.text("license", m.required("license")),
        attribution=m.text("attribution", spec.get("attribution", "")),
        split=spec.get("split", "file"),
        validation_fraction=spec.get("validation_fraction", 0.1),
        aliases=tuple(dict.fromkeys(a.lower() for a in aliases)),
        form=spec.get("form"),
        restate=spec.get("restate"),
        cache=spec.get("cache", 0.0),
        key_hold=spec.get("key_hold", 0.0),
        echo=spec.get("echo", 0.0),
        echo_gap=spec.get("echo_gap", 0.0),
        density=spec.get("density"),
        structure=spec.get("structure", {}),
        keys=spec.get("keys", {}),
        scores=m.scores(),
    )
    if genre.name != path.stem:  # requests, the cache and the models all go by the file's name
        raise m.error("name", f"'{genre.name}' differs from the file's name '{path.stem}': make them the same")
    if genre.form is not None and genre.form not in FORMS:
        raise m.error("form", f"must be one of {', '.join(FORMS)}")
    profile = genre.structure
    if not isinstance(profile, dict) or any(
        name not in PROFILE_MEASURES or not _is_number(v) or not 0 < v <= 1 for name, v in profile.items()
    ):
        raise m.error("structure", f"must map some of {', '.join(PROFILE_MEASURES)} to values above 0 and at most 1")
    keys = genre.keys
    if not isinstance(keys, dict) or any(not _is_number(v) or not 0 < v <= 1 for v in keys.values()):
        raise m.error("keys", 'must map key names ("G major") to shares above 0 and at most 1')
    for name in keys:
        try:
            read_key(name)
        except ValueError:
            raise m.error("keys", f'\'{name}\' is not a key (like "G major" or "E minor")') from None
    share = genre.restate
    if share is not None and (not _is_number(share) or not 0 < share <= 1):
        raise m.error("restate", "must be a share of a section, above 0 and at most 1")
    weight = genre.cache
    if not _is_number(weight) or not 0 <= weight < 1:
        raise m.error("cache", "must be a weight of at least 0 and below 1 (0: the model alone)")
    hold = genre.key_hold
    if not _is_number(hold) or not 0 <= hold <= 5:
        raise m.error("key_hold", "must be a power from 0 (the model alone) to 5")
    echo = genre.echo
    if not _is_number(echo) or not 0 <= echo <= MAX_ECHO_SECONDS:
        raise m.error("echo", f"must be seconds from 0 (no echo) to {MAX_ECHO_SECONDS:g}")
    gap = genre.echo_gap
    if not _is_number(gap) or not 0 <= gap <= MAX_SECONDS:
        raise m.error("echo_gap", f"must be seconds from 0 (phrase after phrase) to {MAX_SECONDS:g}")
    if genre.split not in SPLITS:
        raise m.error("split", f"must be one of {', '.join(SPLITS)}")
    fraction = genre.validation_fraction
    if not _is_number(fraction) or not 0.0 < fraction < 1.0:
        raise m.error("validation_fraction", "must be between 0 and 1")
    density = genre.density
    if density is not None and (not _is_number(density) or not 0 < density <= MAX_DENSITY):
        raise m.error("density", f"must be notes per second above 0 and at most {MAX_DENSITY:g}")
    structure = {name: float(v) for name, v in profile.items()}
    keys = {key_name(*read_key(name)): float(v) for name, v in keys.items()}
    return Genre(
        **{
            **vars(genre),
            "validation_fraction": float(fraction),
            "cache": float(weight),
            "key_hold": float(hold),
            "echo": float(echo),
            "echo_gap": float(gap),
            "density": None if density is None else float(density),
            "structure": structure,
            "keys": keys,
        }
    )


def list_genres(genres_dir: Path | None = None) -> list[str]:
    genres_dir = genres_dir or settings().genres_dir
    return sorted(p.stem for p in genres_dir.glob("*.toml"))


def load_genre(name: str, genres_dir: Path | None = None) -> Genre:
    genres_dir = genres_dir or settings().genres_dir
    path = genres_dir / f"{name}.toml"
    if not path.is_file():
        known = ", ".join(list_genres(genres_dir)) or "none"
        raise UnknownGenreError(f"unknown genre {name!r} (known: {known})")
    return load_genre_file(path)
