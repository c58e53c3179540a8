"""README.md is the contract with a new user: its commands and its settings table must stay true."""

from __future__ import annotations

import re
from pathlib import Path

from typer.main import get_command

from bot.cli import app as bot_app
from bot.config import BotSettings
from composer.cli import app as composer_app
from composer.config import ComposerSettings

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def fenced_blocks(section: str) -> list[str]:
    body = README.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```sh\n(.*?)```", body, re.S)]


def test_the_two_commands_come_first_and_are_what_ci_runs() -> None:
    first, second = fenced_blocks("The two commands")[:2]
    assert first == "scripts/setup.sh && .venv/bin/bot demo"
    assert second == "scripts/test.sh"
    ci = (ROOT / ".ci" / "run").read_text()
    assert "scripts/setup.sh" in ci and "exec scripts/test.sh" in ci
    assert "demo" in get_command(bot_app).commands  # type: ignore[attr-defined]


def test_every_setting_is_in_the_configuration_table() -> None:
    table = README.split("## Configuration\n", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"`([A-Z][A-Z0-9_]+)`", table))
    bot = {name.upper() for name in BotSettings.model_fields}
    composer = {f"COMPOSER_{name.upper()}" for name in ComposerSettings.model_fields}
    missing = (bot | composer | {"COMPOSER_URL", "BOT_ENV_FILE", "BOT_LOG_LEVEL"}) - documented
    assert not missing, f"README's configuration table lacks {sorted(missing)}"


def test_the_operator_guide_names_real_commands() -> None:
    composer_commands = set(get_command(composer_app).commands)  # type: ignore[attr-defined]
    for line in fenced_blocks("Operator guide")[0].splitlines():
        command = line.split()[1]
        assert command in composer_commands, line
