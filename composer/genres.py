"""Genre manifests: which corpus folders make a genre, under which license.

A genre is a small TOML file in ``data/genres/``; adding one needs no code.
"""

from __future__ import annotations

import hashlib
import tomllib
from dataclasses import dataclass
from pathlib import Path

from composer.config import settings

SPLITS = ("asap", "maestro", "file")


class UnknownGenreError(ValueError):
    pass


@dataclass(frozen=True)
class Genre:
    name: str
    description: str
    sources: tuple[str, ...]
    license: str
    attribution: str = ""
    split: str = "file"
    validation_fraction: float = 0.1
    manifest_sha1: str = ""

    def source_dirs(self, data_root: Path) -> list[Path]:
        return [data_root / s for s in self.sources]


def load_genre_file(path: Path) -> Genre:
    raw = path.read_bytes()
    spec = tomllib.loads(raw.decode())
    try:
        genre = Genre(
            name=spec["name"],
            description=spec.get("description", ""),
            sources=tuple(spec["sources"]),
            license=spec["license"],
            attribution=spec.get("attribution", ""),
            split=spec.get("split", "file"),
            validation_fraction=float(spec.get("validation_fraction", 0.1)),
            manifest_sha1=hashlib.sha1(raw).hexdigest(),
        )
    except KeyError as exc:
        raise ValueError(f"{path}: genre manifest lacks {exc.args[0]!r}") from None
    if genre.split not in SPLITS:
        raise ValueError(f"{path}: split must be one of {', '.join(SPLITS)}")
    if not 0.0 < genre.validation_fraction < 1.0:
        raise ValueError(f"{path}: validation_fraction must be between 0 and 1")
    return genre


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
