"""Settings: a missing or wrong one stops the bot with its name; secrets never show."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bot.config import ConfigError, load_settings

BASE = {"MASTODON_API_BASE_URL": "https://example.social", "MASTODON_ACCESS_TOKEN": "s3cret-token"}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    import os

    for name in list(os.environ):
        if name.startswith(("BOT_", "MASTODON_", "TWITTER_", "DATABASE_URL", "MEDIA_DIR", "COMPOSER_URL")):
            monkeypatch.delenv(name, raising=False)


def test_defaults_and_env(monkeypatch, tmp_path):
    for key, value in BASE.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("BOT_DATA_DIR", str(tmp_path))
    settings = load_settings()
    assert settings.bot_platform == "mastodon"
    assert settings.resolved_database_url == f"sqlite:///{tmp_path / 'bot.sqlite3'}"
    assert settings.resolved_media_dir == tmp_path / "media"
    assert settings.bot_lookback_seconds == 3600 and settings.bot_per_account_per_hour == 3


def test_missing_credentials_are_named(monkeypatch):
    monkeypatch.setenv("MASTODON_API_BASE_URL", "https://example.social")
    with pytest.raises(ConfigError, match="MASTODON_ACCESS_TOKEN"):
        load_settings()
    monkeypatch.setenv("BOT_PLATFORM", "twitter")
    with pytest.raises(ConfigError, match=r"TWITTER_API_KEY.*TWITTER_BEARER_TOKEN"):
        load_settings()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("BOT_PLATFORM", "myspace"),
        ("MASTODON_API_BASE_URL", "example.social"),
        ("BOT_PER_ACCOUNT_PER_HOUR", "many"),
        ("BOT_INTERVAL_SECONDS", "-1"),
        ("COMPOSER_URL", "ftp://composer"),
    ],
)
def test_wrong_values_are_named(monkeypatch, name, value):
    for key, base in BASE.items():
        monkeypatch.setenv(key, base)
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=name):
        load_settings()


def test_inconsistent_lengths(monkeypatch):
    for key, value in BASE.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("BOT_DEFAULT_SECONDS", "500")
    with pytest.raises(ConfigError, match="BOT_DEFAULT_SECONDS"):
        load_settings()


def test_env_file(monkeypatch, tmp_path):
    env_file = tmp_path / "bot.env"
    env_file.write_text("MASTODON_API_BASE_URL=https://file.social\nMASTODON_ACCESS_TOKEN=from-file\n")
    monkeypatch.setenv("BOT_ENV_FILE", str(env_file))
    settings = load_settings()
    assert settings.mastodon_api_base_url == "https://file.social"
    monkeypatch.setenv("MASTODON_API_BASE_URL", "https://env.social")  # the environment wins over the file
    assert load_settings().mastodon_api_base_url == "https://env.social"
    monkeypatch.setenv("BOT_ENV_FILE", str(tmp_path / "missing.env"))
    with pytest.raises(ConfigError, match="BOT_ENV_FILE"):
        load_settings()


def test_secrets_do_not_show(monkeypatch):
    for key, value in BASE.items():
        monkeypatch.setenv(key, value)
    settings = load_settings()
    assert "s3cret-token" not in repr(settings) and "s3cret-token" not in str(settings.model_dump())


def test_cli_names_the_setting_and_exits_2(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "MASTODON_API_BASE_URL": "https://example.social"}
    done = subprocess.run([sys.executable, "-m", "bot.cli", "once"], env=env, capture_output=True, text=True)
    assert done.returncode == 2
    assert "MASTODON_ACCESS_TOKEN" in done.stderr and "Traceback" not in done.stderr


def test_genres_command_lists_the_composer_clients_genres(tmp_path):
    from tests.bot_helpers import make_models

    models = make_models(tmp_path / "models", genres=("folk",))
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "COMPOSER_MODELS_DIR": str(models)}
    done = subprocess.run([sys.executable, "-m", "bot.cli", "genres"], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert any(line.split() == ["folk", "v1"] for line in done.stdout.splitlines())


def test_a_malformed_url_is_named_but_not_echoed(monkeypatch):
    for key, value in BASE.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("COMPOSER_URL", "user:hunter2@composer.internal")
    with pytest.raises(ConfigError, match="COMPOSER_URL") as caught:
        load_settings()
    assert "hunter2" not in str(caught.value)


def test_the_default_worker_id_is_unique_per_process(monkeypatch):
    import os

    for key, value in BASE.items():
        monkeypatch.setenv(key, value)
    first, second = load_settings().bot_worker_id, load_settings().bot_worker_id
    assert first != second and first.startswith(f"{os.uname().nodename}:{os.getpid()}:")
    monkeypatch.setenv("BOT_WORKER_ID", "worker-a")  # set explicitly (systemd, tests): stable across restarts
    assert load_settings().bot_worker_id == "worker-a"


@pytest.mark.parametrize(
    "token",
    [
        "qz",
        "secret",
        "operator-s3cret-token",  # 21 characters
        "a" * 64,  # long, but one character
        "CHANGE_ME_admin_token",  # the Kubernetes example's placeholder
        "CHANGE_ME_but_now_much_longer_than_24_chars",
        "changeme-changeme-changeme",
    ],
)
def test_a_weak_or_placeholder_admin_token_stops_the_bot(monkeypatch, token):
    for key, value in BASE.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("ARCHIVE_ADMIN_TOKEN", token)
    with pytest.raises(ConfigError, match=r"ARCHIVE_ADMIN_TOKEN: (is too weak|is the example's placeholder)") as error:
        load_settings()
    assert token not in str(error.value)


@pytest.mark.parametrize("token", ["", "  ", "0123456789abcdef0123456789abcdef", "operator-s3cret-token-for-the-tests"])
def test_a_strong_admin_token_or_none_is_taken(monkeypatch, token):
    for key, value in BASE.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("ARCHIVE_ADMIN_TOKEN", token)
    configured = load_settings().archive_admin_token
    assert (configured.get_secret_value() if configured else "") == token.strip()
