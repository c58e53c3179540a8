"""Clients of the composer: over HTTP, or in-process; the bot uses either through one interface.

``composer_client_from_env()`` picks: HTTP when ``COMPOSER_URL`` names a running service,
else the models are loaded in-process (the embedded default, ``composer.serving.local``,
imported only then: the HTTP client needs neither torch nor any model code). Both check
requests the same way and raise the same errors (``composer.contract``): CompositionRejected
when the request is at fault (no point retrying), ComposerUnavailable when the composer is
busy, down or failed.
"""

from __future__ import annotations

import base64
import logging
import os
import random
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from composer.contract import (
    DEFAULT_CANDIDATES,
    DEFAULT_PRIMER_SECONDS,
    DEFAULT_SECONDS,
    DEFAULT_TEMPERATURE,
    DEFAULT_TOP_P,
    SILENT_PIECE,
    ComposedPiece,
    ComposerClient,
    ComposerUnavailable,
    CompositionError,
    CompositionRejected,
    GenreInfo,
    MusicSummary,
    SilentPiece,
    new_seed,
)

__all__ = ["ComposerClient", "HttpComposerClient", "composer_client_from_env"]

log = logging.getLogger(__name__)


class HttpComposerClient:
    """The composer service over HTTP, retrying with backoff when it is busy or unreachable.

    Retries cover connection errors and 5xx answers (not 501, audio the server cannot
    render); a 4xx is the request's fault and raises CompositionRejected at once. The seed
    is chosen here when not given, so a retried request asks for the very same piece.
    """

    def __init__(
        self,
        base_url: str,
        timeout: float = 330.0,
        retries: int = 3,
        backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ):
        self.base_url = base_url.rstrip("/")
        self.shown_url = _without_credentials(self.base_url)  # for messages: they reach logs and archives
        self.retries, self.backoff_s, self.max_backoff_s = retries, backoff_s, max_backoff_s
        self._http = httpx.Client(
            base_url=self.base_url, timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)), transport=transport
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> HttpComposerClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def genres(self) -> list[GenreInfo]:
        return [GenreInfo.from_dict(g) for g in self._request("GET", "/v1/genres")]

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
        body: dict[str, Any] = {
            "genre": genre,
            "seconds": seconds,
            "temperature": temperature,
            "top_p": top_p,
            "seed": new_seed() if seed is None else seed,
            "primer_seconds": primer_seconds,
            "audio_format": audio_format,
            "pianoroll": pianoroll,
            "key": key,
            "density": density,
            "form": form,
            "candidates": candidates,
        }
        if primer_midi is not None:
            body["primer"] = base64.b64encode(primer_midi).decode()
        out = self._request("POST", "/v1/compositions", body)
        return ComposedPiece(
            id=out["id"],
            genre=out["genre"],
            seed=out["seed"],
            model_version=out["model_version"],
            events=out["events"],
            seconds=out["seconds"],
            midi=base64.b64decode(out["midi"]),
            summary=MusicSummary.from_dict(out["summary"]),
            audio=base64.b64decode(out["audio"]) if out.get("audio") else None,
            audio_mime=out.get("audio_mime"),
            pianoroll=base64.b64decode(out["pianoroll"]) if out.get("pianoroll") else None,
            asked_key=out.get("asked_key"),
            asked_density=out.get("asked_density"),
            controlled=bool(out.get("controlled")),
            form=out.get("form"),
            render_seconds=out.get("render_seconds"),  # None from a server older than the field
        )

    def _request(self, method: str, path: str, body: dict | None = None) -> Any:
        for attempt in range(self.retries + 1):
            wait_at_least = 0.0
            try:
                response = self._http.request(method, path, json=body)
            except httpx.TransportError as exc:
                error: CompositionError = ComposerUnavailable(f"{self.shown_url}{path}: {type(exc).__name__}: {exc}")
            else:
                if response.status_code < 400:
                    return response.json()
                message = _message(response)
                if response.status_code == 422 and message.startswith(f"422: {SILENT_PIECE}"):
                    raise SilentPiece(message, 422)
                if response.status_code < 500 or response.status_code == 501:
                    raise CompositionRejected(message, response.status_code)
                error = ComposerUnavailable(message, response.status_code)
                wait_at_least = _retry_after(response)
            if attempt == self.retries:
                raise error
            pause = min(max(self.backoff_s * 2**attempt * random.uniform(0.5, 1.0), wait_at_least), self.max_backoff_s)
            log.warning("composer: %s; retrying in %.1f s", error.message, pause)
            time.sleep(pause)
        raise AssertionError("unreachable")


def _without_credentials(url: str) -> str:
    """``url`` with its user and password (if any) masked."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1]))


def _message(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail")
    except ValueError:
        detail = None
    return f"{response.status_code}: {detail if isinstance(detail, str) else response.text[:300]}"


def _retry_after(response: httpx.Response) -> float:
    try:
        return float(response.headers.get("retry-after", 0))
    except ValueError:
        return 0.0


def composer_client_from_env(environ: Mapping[str, str] | None = None) -> ComposerClient:
    """HttpComposerClient when COMPOSER_URL is set (COMPOSER_TIMEOUT, COMPOSER_RETRIES tune it), else local."""
    env = os.environ if environ is None else environ
    url = env.get("COMPOSER_URL", "").strip()
    if url:
        return HttpComposerClient(
            url, timeout=float(env.get("COMPOSER_TIMEOUT", 330)), retries=int(env.get("COMPOSER_RETRIES", 3))
        )
    from composer.serving.local import LocalComposerClient  # loads torch and the models' code

    return LocalComposerClient()
