"""The composer as an HTTP service: genres, compositions, health and metrics.

Requests for one genre are sampled together by that genre's batcher (continuous
batching, see ``composer.serving.batching``); this module only speaks HTTP: it checks requests,
hands them to the batchers, waits with a time limit and shapes the answers. OpenAPI docs
are served at ``/docs``.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import signal
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from composer.config import ComposerSettings, settings
from composer.contract import (
    AUDIO_FORMATS,
    DEFAULT_CANDIDATES,
    DEFAULT_PRIMER_SECONDS,
    DEFAULT_SECONDS,
    DEFAULT_TEMPERATURE,
    DEFAULT_TOP_P,
    FORMS,
    FREE_FORM,
    MAX_CANDIDATES,
    MAX_DENSITY,
    MAX_SECONDS,
    MAX_SEED,
    MIDI_MIME,
    PNG_MIME,
    CompositionError,
    candidates_ranked,
    new_seed,
)
from composer.models.store import SERVING_ENGINE
from composer.sampling.sample import fewest_events
from composer.serving.batching import BatcherPool, PendingPiece, QueueFull
from composer.serving.catalog import GENRE_PATTERN, genre_catalog
from composer.serving.composition import (
    assemble,
    candidate_requests,
    check_audio_format,
    decode_primer_midi,
    genre_style,
    keep_and_place,
    piece_form,
    primer_from,
    sample_request,
)
from composer.serving.metrics import ServiceMetrics

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 300.0
MAX_PRIMER_CHARS = 4_000_000  # base64 of a 3 MB MIDI file: far more than any piano piece needs
MAX_BODY_BYTES = MAX_PRIMER_CHARS + 1_000_000  # the largest primer and the rest of a request


PrimerIn = Annotated[str, Field(max_length=MAX_PRIMER_CHARS)] | Annotated[list[int], Field(max_length=100_000)] | None


class ErrorOut(BaseModel):
    detail: str = Field(description="What was wrong, in one line.")


class GenreOut(BaseModel):
    name: str = Field(description="The genre's name, as compositions ask for it.")
    description: str = Field("", description="From the genre's manifest.")
    license: str = Field("", description="License of the corpus the model learned from.")
    aliases: list[str] = Field(default_factory=list, description="Words people use for the genre (its manifest's).")
    current_version: str | None = Field(description="The model version compositions use; null: none trained yet.")
    versions: list[str] = Field(description="Every model version on disk.")
    card: dict[str, Any] | None = Field(description="The current model's card: size, training, validation NLL.")
    loaded: bool = Field(description="Whether this server has the model loaded and ready.")


class CompositionIn(BaseModel):
    genre: str = Field(pattern=GENRE_PATTERN, description="Genre to compose in (see GET /v1/genres).")
    seconds: float = Field(DEFAULT_SECONDS, gt=0, le=MAX_SECONDS, description="Length of the piece in seconds.")
    temperature: float = Field(DEFAULT_TEMPERATURE, gt=0, le=5, description="Above 1: wilder; below 1: tamer.")
    top_p: float = Field(DEFAULT_TOP_P, gt=0, le=1, description="Nucleus sampling: the share of probability kept.")
    seed: int | None = Field(
        None, ge=0, le=MAX_SEED, description="Random seed; the same seed and settings give the same piece."
    )
    primer: PrimerIn = Field(
        None, description="A piece to continue: a MIDI file, base64-encoded, or a list of event tokens (0..387)."
    )
    primer_seconds: float = Field(
        DEFAULT_PRIMER_SECONDS, gt=0, le=MAX_SECONDS, description="How much of the primer's end to continue from."
    )
    audio_format: Literal[AUDIO_FORMATS] | None = Field(
        None, description="Also render the piece as audio in this format (mp4: audio with the piano roll)."
    )
    pianoroll: bool = Field(False, description="Also draw the piece's piano roll (a PNG).")
    key: str | None = Field(
        None, max_length=40, description='A key to compose in, e.g. "D minor", "F# major", "B flat minor".'
    )
    density: float | None = Field(None, ge=0, le=MAX_DENSITY, description="Notes per second to aim for.")
    candidates: int = Field(
        DEFAULT_CANDIDATES, ge=1, le=MAX_CANDIDATES, description="Pieces composed to keep the most musical of."
    )
    form: Literal[(*FORMS, FREE_FORM)] | None = Field(
        None, description="A form plan (sections; a repeated letter restates its section); default: the genre's."
    )
    return_tokens: bool = Field(False, description="Also return the piece's event tokens.")


class SummaryOut(BaseModel):
    notes: int = Field(description="Number of notes.")
    notes_per_second: float = Field(description="Notes per second over the whole piece.")
    lowest_pitch: int | None = Field(description="MIDI pitch of the lowest note (60 is middle C).")
    highest_pitch: int | None = Field(description="MIDI pitch of the highest note.")
    median_pitch: float | None = Field(description="Median MIDI pitch: the register the piece sits in.")
    mean_velocity: float | None = Field(description="Mean MIDI velocity (1..127): how loud it is played.")
    key: str | None = Field(description='The best-fitting key (Krumhansl-Kessler), e.g. "E♭ major".')
    key_clarity: float | None = Field(description="How well the notes fit that key (-1..1; above 0.6: clear).")


class CompositionOut(BaseModel):
    id: str = Field(description="A new UUID for this composition.")
    genre: str
    seed: int = Field(description="The seed used; send it back to get the same piece again.")
    model_version: str = Field(description="The model version that composed the piece.")
    events: int = Field(description="Number of performance events in the piece.")
    seconds: float = Field(description="Length of the piece in seconds.")
    midi: str = Field(description="The piece as a MIDI file, base64-encoded.")
    midi_mime: str = MIDI_MIME
    tokens: list[int] | None = Field(None, description="The event tokens, when asked for.")
    audio: str | None = Field(None, description="The rendered audio, base64-encoded, when asked for.")
    audio_mime: str | None = Field(None, description="MIME type of the audio.")
    pianoroll: str | None = Field(None, description="The piano roll, a base64-encoded PNG, when asked for.")
    pianoroll_mime: str | None = Field(None, description=f"{PNG_MIME} when there is a piano roll.")
    summary: SummaryOut = Field(description="What the piece sounds like, measured from its notes.")
    asked_key: str | None = Field(None, description="The key asked for, as the composer names it.")
    asked_density: float | None = Field(None, description="The notes per second asked for.")
    controlled: bool = Field(False, description="Whether the model followed the key and density asked for.")
    form: str | None = Field(None, description="The form plan the piece follows; null: free.")
    render_seconds: float | None = Field(None, description="Seconds the audio took to render; null without audio.")


ERRORS = {
    404: {"model": ErrorOut, "description": "Unknown genre, or one with no trained model"},
    413: {"model": ErrorOut, "description": "A request body over the limit (a few MB: the largest primer)"},
    422: {"model": ErrorOut, "description": "A bad request: a number out of range, a bad primer, a silent piece"},
    501: {"model": ErrorOut, "description": "Audio rendering is not available on this server"},
    503: {"model": ErrorOut, "description": "Too busy (see Retry-After), or shutting down"},
    504: {"model": ErrorOut, "description": "The piece was not finished within the server's time limit"},
}


class CountRequests:
    """Requests by route and status, and their latency. Plain ASGI rather than ``@app.middleware``,
    whose wrapped ``receive`` hides a client's disconnect from the handler."""

    def __init__(self, app: Any, metrics: ServiceMetrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_and_note(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.requests.labels(route, str(status)).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - started)


class LimitBody:
    """413 for a body over ``max_bytes``: at once when Content-Length says so, else as soon as the bytes
    read pass it, so that no body is ever read whole before it is judged. Plain ASGI, outside the app."""

    def __init__(self, app: Any, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await self.refuse(send)
            return
        seen, started, refused = 0, False, False

        async def counting_receive() -> dict:
            nonlocal seen, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:  # answer now; the app sees the client leave
                    refused = True
                    if not started:
                        await self.refuse(send)
                    return {"type": "http.disconnect"}
            return message

        async def send_unless_refused(message: dict) -> None:
            nonlocal started
            if refused:
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, send_unless_refused)
        except Exception:
            if not refused:  # the app's own failure; one from the cut-off body is answered already
                raise

    async def refuse(self, send: Any) -> None:
        detail = f"the request body is over {self.max_bytes} bytes"
        response = JSONResponse({"detail": detail}, status_code=413, headers={"Connection": "close"})
        await response({"type": "http"}, _no_body, send)


async def _no_body() -> dict:
    return {"type": "http.disconnect"}


class ClientGone(Exception):
    """The client hung up before its piece was finished."""


def race_progress(pending: PendingPiece) -> tuple[int, bool]:
    """A candidate's place in the race (``Stream.progress``) while the batcher thread samples it;
    one whose future is done (finished, failed or refused: its result then says why, if it is
    ranked) counts as finished."""
    stream = pending.stream
    if pending.future.done():
        return (len(stream.tokens) if stream is not None else 0), True
    return stream.progress() if stream is not None else (0, False)  # None: still queued


async def until_ranked(
    pendings: list[PendingPiece], keep: int, request: Request, timeout: float, poll_s: float = 0.25
) -> list[Any | None]:
    """The results of a piece's candidates that are ranked (``fewest_events``: the ``keep`` with
    the fewest events), None for the others, as soon as that is certain; the others are left
    for the caller to cancel. ClientGone as soon as the client disconnects, TimeoutError after
    ``timeout``: neither uvicorn nor Starlette cancels a handler when its client leaves, so a
    piece nobody waits for would hold its places in the batch to the end; asking every
    ``poll_s`` frees them."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    waiters = [asyncio.wrap_future(p.future) for p in pendings]
    for waiter in waiters:  # a candidate not ranked may fail or be cancelled unseen: nothing to report
        waiter.add_done_callback(lambda w: w.cancelled() or w.exception())
    while True:
        kept = fewest_events([race_progress(p) for p in pendings], keep)
        # the kept ones have finished sampling; their futures resolve a moment later
        waiting = [w for i, w in enumerate(waiters) if not w.done() and (kept is None or i in kept)]
        if kept is not None and not waiting:
            return [waiters[i].result() if i in kept else None for i in range(len(pendings))]
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise TimeoutError
        if waiting:
            await asyncio.wait(waiting, timeout=min(poll_s, remaining), return_when=asyncio.FIRST_COMPLETED)
        else:  # the futures resolved, their wrappers not yet: read the race again shortly
            await asyncio.sleep(0.001)
        if await request.is_disconnected():
            raise ClientGone


def _cancel(batcher, pendings) -> None:
    for pending in pendings:
        batcher.cancel(pending)


def create_app(
    cfg: ComposerSettings | None = None,
    *,
    models_dir: Path | None = None,
    genres_dir: Path | None = None,
    max_batch: int = 64,
    queue_limit: int = 256,
    request_timeout_s: float = DEFAULT_TIMEOUT_S,
    max_seconds: float = MAX_SECONDS,
    device: str | None = None,
    engine: str = SERVING_ENGINE,
    reload_check_s: float = 1.0,
    max_body_bytes: int = MAX_BODY_BYTES,
) -> FastAPI:
    """The service app; models load at startup in the batchers' threads (GET /healthz says when).

    ``max_batch=1`` turns batching off. On a CPU every ``engine`` keeps a piece independent
    of its batch, so a seed replays exactly (see composer.nn.fastlstm for CUDA).
    """
    cfg = cfg or settings()
    models_dir = models_dir or cfg.models_dir
    genres_dir = genres_dir or cfg.genres_dir
    max_seconds = min(max_seconds, MAX_SECONDS)
    metrics = ServiceMetrics()
    pool = BatcherPool(
        models_dir,
        genres_dir,
        device=device or cfg.device,
        engine=engine,
        max_batch=max_batch,
        queue_limit=queue_limit,
        metrics=metrics,
        reload_check_s=reload_check_s,
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        pool.start()
        previous = None
        if threading.current_thread() is threading.main_thread() and hasattr(signal, "SIGHUP"):
            previous = signal.signal(signal.SIGHUP, lambda *_: pool.reload())
        try:
            yield
        finally:
            if previous is not None:
                signal.signal(signal.SIGHUP, previous)
            await run_in_threadpool(pool.stop)

    app = FastAPI(
        title="band composer",
        version="1",
        description="Compose expressive piano pieces with Performance RNN genre models.",
        lifespan=lifespan,
    )
    app.state.pool, app.state.metrics = pool, metrics

    app.add_middleware(CountRequests, metrics=metrics)
    app.add_middleware(LimitBody, max_bytes=max_body_bytes)  # outermost of the two: a 413 is counted too

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{k: e[k] for k in ("loc", "msg", "type") if k in e} for e in exc.errors()]
        where = [
            "body" if e["type"] == "json_invalid" else ".".join(str(p) for p in e["loc"] if p != "body") or "body"
            for e in errors
        ]
        detail = "; ".join(f"{w}: {e['msg']}" for w, e in zip(where, errors))
        return JSONResponse({"detail": detail, "errors": jsonable_encoder(errors)}, status_code=422)

    @app.get("/v1/genres", response_model=list[GenreOut], summary="Genres, their model versions and cards")
    async def genres() -> list[GenreOut]:
        batchers = pool.batchers
        infos = await run_in_threadpool(genre_catalog, models_dir, genres_dir)
        return [GenreOut(**vars(info), loaded=info.name in batchers and batchers[info.name].loaded) for info in infos]

    @app.post(
        "/v1/compositions",
        response_model=CompositionOut,
        responses=ERRORS,
        summary="Compose a new piece",
    )
    async def compose(body: CompositionIn, http_request: Request) -> CompositionOut:
        seed = new_seed() if body.seed is None else body.seed
        try:
            batcher = pool.batcher(body.genre)
            check_audio_format(body.audio_format)
            primer = decode_primer_midi(body.primer) if isinstance(body.primer, str) else body.primer
            tokens = await run_in_threadpool(primer_from, primer, body.primer_seconds)
            style = await run_in_threadpool(genre_style, body.genre, genres_dir)
            request = sample_request(
                body.seconds,
                body.temperature,
                body.top_p,
                seed,
                tokens,
                max_seconds,
                body.key,
                body.density,
                piece_form(body.form, style),
                style,
            )
            pendings = []
            for candidate in candidate_requests(request, body.candidates):
                try:
                    pendings.append(batcher.submit(candidate))
                except QueueFull:  # all of a piece's candidates or none: free the places already taken
                    _cancel(batcher, pendings)
                    raise
        except QueueFull as exc:
            raise HTTPException(503, exc.message, headers={"Retry-After": str(exc.retry_after)}) from None
        except CompositionError as exc:
            raise HTTPException(exc.status, exc.message) from None
        try:
            deadline = time.monotonic() + request_timeout_s
            results = await until_ranked(
                pendings, candidates_ranked(len(pendings)), http_request, max(deadline - time.monotonic(), 0.0)
            )
            _cancel(batcher, [p for p, r in zip(pendings, results) if r is None])  # their places go now
            scored = [(r.tokens, r.log_likelihood) if r is not None else None for r in results]
            best, tokens = await run_in_threadpool(
                keep_and_place, scored, body.key, request.seed, style, request.primer is not None
            )
            sampled = results[best]
            piece = await run_in_threadpool(
                assemble,
                body.genre,
                sampled.model_version,
                request,
                tokens,
                body.audio_format,
                body.pianoroll,
                body.key,
                body.density,
                sampled.controlled,
            )
        except TimeoutError:
            raise HTTPException(
                504, f"the piece was not finished within {request_timeout_s:g} s; try a shorter one, or later"
            ) from None
        except CompositionError as exc:
            raise HTTPException(exc.status, exc.message) from None
        except ClientGone:  # its places in the batch are freed below; 499 (nginx's "client closed request")
            raise HTTPException(499, "the client closed the connection") from None
        finally:  # a candidate still running when the piece failed or was given up frees its place
            _cancel(batcher, [p for p in pendings if not p.future.done()])
        return CompositionOut(
            id=piece.id,
            genre=piece.genre,
            seed=piece.seed,
            model_version=piece.model_version,
            events=piece.events,
            seconds=piece.seconds,
            midi=base64.b64encode(piece.midi).decode(),
            tokens=tokens.tolist() if body.return_tokens else None,
            audio=base64.b64encode(piece.audio).decode() if piece.audio is not None else None,
            audio_mime=piece.audio_mime,
            pianoroll=base64.b64encode(piece.pianoroll).decode() if piece.pianoroll is not None else None,
            pianoroll_mime=PNG_MIME if piece.pianoroll is not None else None,
            summary=SummaryOut(**piece.summary.to_dict()),
            asked_key=piece.asked_key,
            asked_density=piece.asked_density,
            controlled=piece.controlled,
            form=piece.form,
            render_seconds=piece.render_seconds,
        )

    @app.get("/healthz", summary="Readiness: models loaded, queue depth")
    async def healthz() -> JSONResponse:
        batchers = pool.batchers
        genres = {
            name: {
                "loaded": b.loaded,
                "version": b.version,
                "queue_depth": b.queue_depth,
                "active": b.active,
                "error": b.error,
            }
            for name, b in batchers.items()
        }
        ready = bool(batchers) and all(b.loaded for b in batchers.values())
        failed = any(b.error and not b.loaded for b in batchers.values())
        body = {
            "status": "ok" if ready else "error" if failed else "loading" if batchers else "no models",
            "ready": ready,
            "queue_depth": sum(b.queue_depth for b in batchers.values()),
            "active": sum(b.active for b in batchers.values()),
            "max_batch": max_batch,
            "genres": genres,
        }
        return JSONResponse(body, status_code=200 if ready else 503)

    @app.get("/metrics", summary="Prometheus metrics")
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type=metrics.content_type)

    return app


def serve(
    host: str = "127.0.0.1", port: int = 8000, log_level: str = "info", threads: int = 0, **app_options: Any
) -> None:
    """Run the service with uvicorn until SIGINT or SIGTERM; SIGHUP reloads promoted models.

    ``threads`` caps torch's CPU threads: sampling steps are small, and threads that spin
    waiting for a busy core cost more than they bring.
    """
    import torch
    import uvicorn

    if threads:
        torch.set_num_threads(threads)
    uvicorn.run(create_app(**app_options), host=host, port=port, log_level=log_level)
