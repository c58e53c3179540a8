"""Which genres can be composed: manifests joined with the models on disk.

A genre may have a manifest and no model yet (not trained), or a model and no manifest
(a models directory made elsewhere); the service serves any genre with a current model.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from composer.contract import CompositionRejected, GenreInfo
from composer.corpus.genres import list_genres, load_genre
from composer.models.registry import card, current_version, genres_with_models, list_versions

GENRE_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
"""Genre names index directories, so nothing that could walk out of them is accepted."""


log = logging.getLogger(__name__)


def served_genres(models_dir: Path) -> list[str]:
    """Genres that have a current model in ``models_dir``."""
    return genres_with_models(models_dir)


def genre_catalog(models_dir: Path, genres_dir: Path) -> list[GenreInfo]:
    """Every genre with a manifest or a model, with its versions and current model card."""
    infos = []
    for name in sorted(set(list_genres(genres_dir)) | set(served_genres(models_dir))):
        version = current_version(name, models_dir)
        try:
            model_card = card(name, version, models_dir) if version else None
        except (LookupError, OSError, ValueError):
            model_card = None  # a CURRENT naming a missing version: listed, not served
        description = license_ = ""
        aliases: list[str] = []
        if (genres_dir / f"{name}.toml").is_file():
            try:
                spec = load_genre(name, genres_dir)
            except ValueError as exc:  # one broken manifest must not take every genre off the list
                log.warning("genre %s: %s", name, exc)
            else:
                description, license_, aliases = spec.description, spec.license, list(spec.aliases)
        infos.append(
            GenreInfo(name, version, list_versions(name, models_dir), model_card, description, license_, aliases)
        )
    return infos


def resolve_genre(genre: str, models_dir: Path, genres_dir: Path) -> None:
    """Check that ``genre`` has a model to compose with; CompositionRejected (404) if not."""
    if not re.match(GENRE_PATTERN, genre):
        raise CompositionRejected(f"invalid genre name {genre!r}", 422)
    if current_version(genre, models_dir):
        return
    known = sorted(set(list_genres(genres_dir)) | set(served_genres(models_dir)))
    if genre in known:
        raise CompositionRejected(f"genre {genre!r} has no trained model yet", 404)
    raise CompositionRejected(f"unknown genre {genre!r} (known: {', '.join(known) or 'none'})", 404)
