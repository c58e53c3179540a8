"""The composer in this process: the embedded default, for a bot with no COMPOSER_URL."""

from __future__ import annotations

import threading
from pathlib import Path

from composer.config import settings
from composer.contract import (
    DEFAULT_CANDIDATES,
    DEFAULT_PRIMER_SECONDS,
    DEFAULT_SECONDS,
    DEFAULT_TEMPERATURE,
    DEFAULT_TOP_P,
    MAX_SECONDS,
    ComposedPiece,
    CompositionRejected,
    GenreInfo,
    candidates_ranked,
    new_seed,
)
from composer.models.store import SERVING_ENGINE, LoadedModel, current_key, load_current
from composer.serving.catalog import genre_catalog, resolve_genre
from composer.serving.composition import (
    assemble,
    candidate_requests,
    check_audio_format,
    genre_style,
    keep_and_place,
    piece_form,
    primer_from,
    sample_request,
)


class LocalComposerClient:
    """The composer in this process: models load on first use and reload when a new one is promoted."""

    def __init__(
        self,
        models_dir: Path | None = None,
        genres_dir: Path | None = None,
        device: str | None = None,
        engine: str = SERVING_ENGINE,
        max_seconds: float = MAX_SECONDS,
    ):
        cfg = settings()
        self.models_dir = models_dir or cfg.models_dir
        self.genres_dir = genres_dir or cfg.genres_dir
        self.device, self.engine = device or cfg.device, engine
        self.max_seconds = min(max_seconds, MAX_SECONDS)
        self._models: dict[str, LoadedModel] = {}
        self._lock = threading.Lock()

    def genres(self) -> list[GenreInfo]:
        return genre_catalog(self.models_dir, self.genres_dir)

    def compose(
        self,
        genre: str,
        seconds: float = DEFAULT_SECONDS,
        temperature: float = DEFAULT_TEMPERATURE,
        top_p: float = DEFAULT_TOP_P,
        seed: int | None = None,
        primer_midi: bytes | None = None,
        audio_format: str | None = None,
        primer_seconds: float = DEFAULT_PRIMER_SECONDS,
        pianoroll: bool = False,
        key: str | None = None,
        density: float | None = None,
        form: str | None = None,
        candidates: int = DEFAULT_CANDIDATES,
    ) -> ComposedPiece:
        resolve_genre(genre, self.models_dir, self.genres_dir)
        check_audio_format(audio_format)
        primer = primer_from(primer_midi, primer_seconds)
        seed = new_seed() if seed is None else seed
        style = genre_style(genre, self.genres_dir)
        request = sample_request(
            seconds,
            temperature,
            top_p,
            seed,
            primer,
            self.max_seconds,
            key,
            density,
            piece_form(form, style),
            style,
        )
        asked = candidate_requests(request, candidates)
        model = self._model(genre)
        request = model.sampler.fit(request)
        scored = model.sampler.generate_scored([model.sampler.fit(r) for r in asked], candidates_ranked(candidates))
        _, tokens = keep_and_place(scored, key, seed, style, primed=primer is not None)
        controlled = request.controls is not None
        return assemble(genre, model.version, request, tokens, audio_format, pianoroll, key, density, controlled)

    def _model(self, genre: str) -> LoadedModel:
        with self._lock:
            model = self._models.get(genre)
            if model is None or model.key != current_key(genre, self.models_dir):
                try:
                    model = load_current(genre, self.models_dir, self.device, self.engine)
                except LookupError as exc:
                    raise CompositionRejected(str(exc), 404) from None
                self._models[genre] = model
            return model
