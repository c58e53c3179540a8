"""The archive web application: pages, feeds, media, JSON API and operator actions over the bot's database.

It only reads what the worker writes (apart from the operators' hide and delete), so it can
run beside the bot on the same SQLite file (WAL) or PostgreSQL database.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException

from bot.config import BotSettings
from bot.db import make_engine, session_factory
from bot.web import admin, api, media, pages, sharing
from bot.web.site import Site

STATIC = Path(__file__).parent / "static"

# No script at all: the only interactive part is the browser's own <audio> player.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; img-src 'self'; media-src 'self'; style-src 'self'; "
        "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "strict-origin-when-cross-origin",
}


def create_app(settings: BotSettings, genre_catalog: Callable[[], list[Any]] | None = None) -> FastAPI:
    """The app for ``settings``; ``genre_catalog`` defaults to the composer client's ``genres``."""
    if genre_catalog is None:
        genre_catalog = _composer_genres(settings)
    app = FastAPI(
        title="band archive",
        description="Every piece the band bot has composed.",
        version="1",
        docs_url=None,
        redoc_url=None,
        openapi_url="/api/v1/openapi.json",
    )
    engine = make_engine(settings.resolved_database_url)
    app.state.site = Site(settings, session_factory(engine), genre_catalog)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    for router in (api.router, admin.router, media.router, sharing.router, pages.router):
        app.include_router(router)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:  # async: never queued behind pages waiting on the database
        """Liveness: the process answers (no database, so a database outage restarts nothing)."""
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    def readyz() -> Response:
        """Readiness: the database answers a query; 503 while it does not."""
        try:
            with engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        except SQLAlchemyError as exc:
            return JSONResponse({"status": "database unavailable", "error": type(exc).__name__}, status_code=503)
        return JSONResponse({"status": "ok"})

    @app.middleware("http")
    async def security_headers(request: Request, call_next: Callable) -> Response:
        response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        return _error(request, exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        if request.url.path.startswith("/api/"):
            return JSONResponse({"detail": jsonable_errors(exc)}, status_code=422)
        return _error(request, 400, "Some of the values in that address are not valid.")

    app.add_middleware(HeadAsGet)
    return app


class HeadAsGet:
    """Answer HEAD wherever GET is answered, with GET's status and headers and no body.

    FastAPI routes take only the methods they name, so HEAD got 405; podcast clients and
    link checkers (and some link-card fetchers) ask HEAD first.
    """

    def __init__(self, app: Callable) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def headers_only(message: dict) -> None:
            if message["type"] == "http.response.body":
                if not message.get("more_body", False):
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
                return
            await send(message)

        await self.app(dict(scope, method="GET"), receive, headers_only)


def jsonable_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    return [{"loc": list(e.get("loc", ())), "msg": e.get("msg", "")} for e in exc.errors()]


def _error(request: Request, status: int, detail: str, headers: dict[str, str] | None = None) -> Response:
    if request.url.path.startswith(("/api/", "/media/", "/static/", "/oembed")) and not request.url.path.endswith(
        "/docs"
    ):
        return JSONResponse({"detail": detail}, status_code=status, headers=headers)
    if status == 404 and detail in ("Not Found", ""):
        detail = "There is nothing at this address."
    return pages.render(request, "error.html", status=status, code=status, detail=detail)


def _composer_genres(settings: BotSettings) -> Callable[[], list[Any]]:
    def fetch() -> list[Any]:
        import os

        from composer.client import composer_client_from_env

        env = dict(os.environ)
        if settings.composer_url:
            env["COMPOSER_URL"] = settings.composer_url
        return composer_client_from_env(env).genres()

    return fetch
