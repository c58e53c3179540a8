"""Shared pieces of the bot tests: a real mastodon_mock server process, tiny models, databases."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from bot.local_mastodon import MockMastodon, mock_mastodon  # noqa: F401 - re-exported for the tests
from tests.conftest import tiny_model

PG_URL = os.environ.get("BOT_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def make_models(root: Path, genres: tuple[str, ...] = ("classical", "folk", "pop")) -> Path:
    for i, genre in enumerate(genres):
        tiny_model(root / genre / "v1", genre=genre, seed=i)
        (root / genre / "CURRENT").write_text("v1\n")
    return root


def make_conditioned_model(root: Path, genre: str = "folk") -> Path:
    """A tiny model that takes a key and a density (composer.codec.controls), as ``composer train
    --controls`` makes them: untrained, so it follows them in form only."""
    import torch

    from composer.codec.controls import CONTROL_DIM
    from composer.nn.model import ModelConfig, PerformanceRNN, save_model

    torch.manual_seed(5)
    model = PerformanceRNN(ModelConfig(embed_dim=16, hidden_size=32, num_layers=2, control_dim=CONTROL_DIM))
    card = {"genre": genre, "validation_nll": 9.9, "version": "v1"}
    save_model(model, root / genre / "v1", card, half=False)
    (root / genre / "CURRENT").write_text("v1\n")
    return root


@contextmanager
def postgres_schema() -> Iterator[str]:
    """A fresh schema in the test database, dropped afterwards; yields a URL whose search_path is that schema."""
    sqlalchemy = pytest.importorskip("sqlalchemy")
    engine = sqlalchemy.create_engine(PG_URL)
    schema = f"bot_test_{uuid.uuid4().hex[:10]}"
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql(f"CREATE SCHEMA {schema}")
    except sqlalchemy.exc.OperationalError as exc:
        engine.dispose()
        pytest.skip(f"PostgreSQL not reachable at {PG_URL}: {exc}")
    try:
        yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    finally:
        with engine.begin() as connection:
            connection.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        engine.dispose()


def bot_env(server: MockMastodon, workdir: Path, database_url: str, models: Path, **extra: str) -> dict[str, str]:
    """The environment of a `bot once` process pointed at the mock and a tiny model."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BOT_", "MASTODON_", "TWITTER_", "COMPOSER_"))}
    env.update(
        BOT_PLATFORM="mastodon",
        MASTODON_API_BASE_URL=server.base_url,
        MASTODON_ACCESS_TOKEN="band_token",
        DATABASE_URL=database_url,
        MEDIA_DIR=str(workdir / "media"),
        BOT_DATA_DIR=str(workdir),
        ARCHIVE_BASE_URL="https://band.example",
        COMPOSER_MODELS_DIR=str(models),
        BOT_DEFAULT_SECONDS="5",
        BOT_MIN_SECONDS="2",
        BOT_MAX_SECONDS="8",
        BOT_RETRY_BASE_SECONDS="0",
        BOT_WORKER_ID="test-worker",
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
    )
    env.update(extra)
    return env
